"""Execute the notebooks against real servers; fail on any cell error.

    python notebooks/execute.py            # run every notebook, leave the files alone
    python notebooks/execute.py --write    # ...and save the fresh outputs (make notebooks)
    python notebooks/execute.py 01_quickstart.ipynb

The kernels get ``DUALSAVER_REDIS_URL`` / ``DUALSAVER_POSTGRES_URL`` from the
environment; where unset, the per-user embedded servers are started once here and
passed to every kernel (and stopped at exit if this process started them).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

__all__ = ["NOTEBOOK_DIR", "execute_notebook", "kernel_env", "main", "notebooks"]

NOTEBOOK_DIR = Path(__file__).resolve().parent
REPO_ROOT = NOTEBOOK_DIR.parent
KERNEL = "python3"
"""jupyter_client runs a ``python3`` kernel spec with this interpreter
(``sys.executable``), so the kernel sees the project's virtualenv."""


def notebooks(names: Sequence[str] = ()) -> list[Path]:
    """The notebooks to run: the given names, or every ``*.ipynb`` here, in order."""
    if names:
        return [NOTEBOOK_DIR / Path(name).name for name in names]
    return sorted(NOTEBOOK_DIR.glob("[0-9]*.ipynb"))


def execute_notebook(
    path: Path,
    *,
    env: Mapping[str, str] | None = None,
    write: bool = False,
    timeout: int = 180,
) -> nbformat.NotebookNode:
    """Run every cell of ``path`` in a fresh kernel with ``env``; raise
    ``CellExecutionError`` on the first failing cell. The kernel is shut down either way.
    """
    nb = nbformat.read(path, as_version=4)
    env = kernel_env(env)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=timeout,
        record_timing=False,  # no timestamps in the committed files: smaller diffs
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=env)
    if write:
        for cell in nb.cells:
            cell.metadata.pop("execution", None)
        nbformat.write(nb, path)
    return nb


def kernel_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with this checkout first on ``PYTHONPATH``, so
    the kernel imports the package from here, whatever else is installed."""
    result = dict(os.environ if env is None else env)
    paths = [str(REPO_ROOT), *filter(None, result.get("PYTHONPATH", "").split(os.pathsep))]
    result["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return result


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    if not (env.get("DUALSAVER_REDIS_URL") and env.get("DUALSAVER_POSTGRES_URL")):
        from langgraph_dualsaver.embedded import shared_servers

        servers = shared_servers()  # stopped at exit if started here
        env.setdefault("DUALSAVER_REDIS_URL", servers.redis_url)
        env.setdefault("DUALSAVER_POSTGRES_URL", servers.postgres_url)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook file names (default: all)")
    parser.add_argument("--write", action="store_true", help="save the outputs")
    args = parser.parse_args(argv)
    env = _server_env()
    failed = []
    for path in notebooks(args.names):
        print(f"executing {path.name} ...", flush=True)
        try:
            execute_notebook(path, env=env, write=args.write)
        except CellExecutionError as error:
            print(f"FAILED {path.name}:\n{error}", file=sys.stderr)
            failed.append(path.name)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("all notebooks ran" + (" and their outputs were saved" if args.write else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
