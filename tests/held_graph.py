"""The case_8842 graph with a gate at ``billing_agent``, for the Agent Server tests.

The test copies this file into the served project (graph id ``held``). A run entering
``billing_agent`` appends a line to ``<gate dir>/<thread_id>.entered`` and waits until
``<gate dir>/<thread_id>.open`` exists, so a test can send a second run while the first
one is in flight. ``account_agent`` runs in the same superstep and finishes, so the held
run has checkpoints and pending writes in the stores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from langchain_core.runnables import RunnableConfig

from langgraph_dualsaver.app.agents import thread_id_of
from langgraph_dualsaver.app.graph import build_graph
from langgraph_dualsaver.app.state import WorkflowState

GATE_DIR_VAR = "DUALSAVER_TEST_GATE_DIR"
HELD_NODE = "billing_agent"
HOLD_LIMIT_S = 120.0
POLL_S = 0.02


def entered_file(gate_dir: Path, thread_id: str) -> Path:
    return gate_dir / f"{thread_id}.entered"


def open_file(gate_dir: Path, thread_id: str) -> Path:
    return gate_dir / f"{thread_id}.open"


def _hold(node: str, state: WorkflowState, config: RunnableConfig) -> None:
    """Block ``billing_agent`` (in its worker thread) until the test opens the gate."""
    if node != HELD_NODE:
        return
    gate_dir = Path(os.environ[GATE_DIR_VAR])
    thread_id = thread_id_of(config)
    with entered_file(gate_dir, thread_id).open("a") as log:
        log.write(f"{state.get('customer_id', '')}\n")
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not open_file(gate_dir, thread_id).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gate of thread {thread_id} stayed shut {HOLD_LIMIT_S}s")
        time.sleep(POLL_S)


graph = build_graph(on_enter=_hold)
