"""The ``dualsaver`` command: look inside threads, audit them, flush, check the stores.

``dualsaver --help`` lists the commands; ``python -m langgraph_dualsaver`` is the same.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 1 error, 2 usage)."""
    from langgraph_dualsaver.cli.app import app

    try:
        app(args=argv, prog_name="dualsaver")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
