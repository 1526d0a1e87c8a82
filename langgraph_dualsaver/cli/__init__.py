"""The ``dualsaver`` command: look inside threads, audit them, flush, check the stores.

``dualsaver --help`` lists the commands; ``python -m langgraph_dualsaver`` is the same.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main"]

CLI_PACKAGES = ("typer", "rich")
"""What the ``cli`` extra installs: the checkpointer itself needs neither."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 1 error, 2 usage)."""
    missing = _missing(CLI_PACKAGES)
    if missing:
        print(
            f"dualsaver: the command needs {' and '.join(missing)}, from the 'cli' extra: "
            "pip install 'langgraph-dualsaver[cli]'",
            file=sys.stderr,
        )
        return 1
    from langgraph_dualsaver.cli.app import app

    try:
        app(args=argv, prog_name="dualsaver")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def _missing(packages: tuple[str, ...]) -> list[str]:
    missing = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing
