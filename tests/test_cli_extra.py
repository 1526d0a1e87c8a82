"""Without the ``cli`` extra (typer and rich), ``dualsaver`` says which extra to install
instead of a traceback, and the checkpointer itself imports neither."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DUALSAVER = Path(sys.executable).with_name("dualsaver")
HINT = "pip install 'langgraph-dualsaver[cli]'"


def without(modules: tuple[str, ...], tmp_path: Path) -> dict[str, str]:
    """An environment where importing each of ``modules`` fails as if it were not
    installed: a module of that name, first on the path, that raises on import."""
    for name in modules:
        (tmp_path / f"{name}.py").write_text(
            f"raise ModuleNotFoundError({f'No module named {name!r}'!r}, name={name!r})\n"
        )
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.pure
@pytest.mark.parametrize("missing", [("typer",), ("rich",), ("typer", "rich")])
@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_dualsaver_without_the_cli_extra_names_it(
    missing: tuple[str, ...], how: str, tmp_path: Path
) -> None:
    command = (
        [str(DUALSAVER), "status"]
        if how == "console script"
        else [sys.executable, "-m", "langgraph_dualsaver", "status"]
    )
    result = run(command, without(missing, tmp_path))
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()  # one line, no traceback
    assert HINT in line
    for name in missing:
        assert name in line


@pytest.mark.pure
def test_the_checkpointer_works_without_the_cli_extra(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from langgraph_dualsaver import DualSaver, PostgresDurableSaver, RedisHotSaver\n"
        "from langgraph_dualsaver import app, embedded, metrics, server\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich'))\n"
        "print(loaded)\n"
    )
    result = run([sys.executable, "-c", code], without(("typer", "rich"), tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
