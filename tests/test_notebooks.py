"""The notebooks execute, cell by cell, against the test session's servers."""

from __future__ import annotations

import base64
import importlib.util
import os
import re
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

from tests.servers import fresh_database, fresh_prefix

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

EXPECTED = {
    "01_quickstart.ipynb": [
        "A refund of $49.99 is approved",
        "refund: $650.00",
        "A refund of $650.00 is approved",
        "durable tier (PostgreSQL)",
    ],
    "02_resume_after_crash.ipynb": [
        "returncode=-9",
        "node runs after the resume",
        "A refund of $49.99 is approved",
    ],
    "03_time_travel_and_update_state.ipynb": [
        "refund of $650.00 is over the $500.00 limit",
        "next: ('response_agent',)",
        "already refunded by the bank",
        "fork point: more than one checkpoint continues from it",
        "audit trail (PostgreSQL)",
    ],
    "04_tiers_and_modes.ipynb": [
        "write_through",
        "not yet durable",
        "every hot key expired after",
        "read back after expiry",
        "caught up",
        "cold reads: 40 misses in Valkey, 40 threads put back; hot reads: 40 hits in Valkey",
    ],
    "05_big_state.ipynb": [
        "150 steps, one message each: HumanMessage, AIMessage",
        "tool outputs: 3, at steps [50, 100, 150], 2.0 MiB of JSON each",
        "dual_plain: DualSaver.from_conn_string(..., mode='write_behind', compression=None, "
        "offload=None)",
        "messages in each thread: 150",
    ],
    "06_schema_migrations.ipynb": [
        "paused before ('policy_agent',), schema_version 1",
        "version 2 on a version 1 case, no upgrade: KeyError: 'currency'",
        "read as schema_version 2, upgraded from 1",
        "A refund of $650.00 is approved",
        "step 2 loop schema_version 2 upgraded from 1 currency USD",
        "the paused checkpoint as stored: schema_version 1, billing has currency: False",
        "+ billing.currency = 'USD'",
        "latest now: source update, schema_version 2",
    ],
}

PICTURES = {
    "01_quickstart.ipynb": 1,  # the graph
    "03_time_travel_and_update_state.ipynb": 1,  # the history as a tree
    "04_tiers_and_modes.ipynb": 2,  # outbox lag over a burst; hot vs cold reads
    "05_big_state.ipynb": 1,  # durable bytes as the thread grows; every store at the end
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pictures(nb: nbformat.NotebookNode) -> list[bytes]:
    """The PNG images a notebook's code cells show, decoded."""
    return [
        base64.b64decode(output["data"]["image/png"])
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]


def _executor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notebook_execute", NOTEBOOK_DIR / "execute.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.pure
def test_every_notebook_is_covered() -> None:
    assert sorted(p.name for p in _executor().notebooks()) == sorted(EXPECTED)


@pytest.mark.pure
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_notebooks_show_the_pictures_they_promise(name: str) -> None:
    pictures = _pictures(nbformat.read(NOTEBOOK_DIR / name, as_version=4))
    assert len(pictures) == PICTURES.get(name, 0)
    assert all(p.startswith(PNG_MAGIC) for p in pictures)


@pytest.mark.notebooks
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_and_shows_its_results_and_pictures(
    name: str, redis_url: str, postgres_url: str, tmp_path: Path
) -> None:
    executor = _executor()
    with fresh_database(postgres_url) as dsn, fresh_prefix(redis_url) as prefix:
        env = {
            **os.environ,
            "DUALSAVER_REDIS_URL": redis_url,
            "DUALSAVER_POSTGRES_URL": dsn,
            "DUALSAVER_PREFIX": prefix,
            "DUALSAVER_HOME": str(tmp_path / "home"),
        }
        # Raises CellExecutionError on the first failing cell; the kernel is shut down.
        nb = executor.execute_notebook(NOTEBOOK_DIR / name, env=env, write=False)

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = ANSI.sub(
        "",
        "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs),
    )
    text = " ".join(text.split())  # rich wraps long lines
    missing = [line for line in EXPECTED[name] if line not in text]
    assert not missing, text[-4000:]
    pictures = _pictures(nb)
    assert len(pictures) == PICTURES.get(name, 0)
    assert all(p.startswith(PNG_MAGIC) for p in pictures)
