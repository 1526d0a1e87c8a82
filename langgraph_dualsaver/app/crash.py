"""A real crash: a child process runs a case and is killed with SIGKILL mid-run.

The child (``python -m langgraph_dualsaver.app.crash``) opens ``DualSaver.from_env()``
(the same servers as its parent: the environment's URLs, or the per-user embedded
servers it finds running) and runs the case. When ``policy_agent`` is about to start,
billing and account have finished; the child holds there, says so in a file and waits.
The parent waits until the stores acknowledge what the child wrote, then kills it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from langgraph_dualsaver.app.agents import NodeHook
from langgraph_dualsaver.app.state import WorkflowState

if TYPE_CHECKING:
    from langgraph_dualsaver.chain.saver import DualSaver

__all__ = ["KilledRun", "both_stores_hold", "hold_before", "kill_mid_run", "main"]


def hold_before(node: str, ready_file: Path) -> NodeHook:
    """A hook that, when ``node`` starts, writes this process's PID to ``ready_file``
    and blocks for good: the process is meant to be killed there."""

    def hook(name: str, state: WorkflowState, config: RunnableConfig) -> None:
        if name == node:
            ready_file.write_text(str(os.getpid()))
            threading.Event().wait()

    return hook


def both_stores_hold(
    graph: CompiledStateGraph[WorkflowState, None, WorkflowState, WorkflowState],
    saver: DualSaver,
    config: RunnableConfig,
    next_node: str,
) -> Callable[[], Awaitable[bool]]:
    """A condition for ``kill_mid_run``: the thread's latest checkpoint is the one
    before ``next_node``, in Valkey (what the graph reads) and, after a flush, in
    PostgreSQL too. Once true, whatever the child wrote was acknowledged by both."""

    async def condition() -> bool:
        hot = await graph.aget_state(config)
        if hot.next != (next_node,):
            return False
        await saver.aflush()
        durable = await saver.durable.aget_tuple(config)
        return durable is not None and (
            durable.config["configurable"]["checkpoint_id"]
            == hot.config["configurable"]["checkpoint_id"]
        )

    return condition


@dataclass(frozen=True)
class KilledRun:
    """What the parent saw: the child's PID and its exit status (``-9`` for SIGKILL)."""

    pid: int
    returncode: int
    held_node: str


async def kill_mid_run(
    thread_id: str,
    customer_id: str,
    counters_path: Path,
    acknowledged: Callable[[], Awaitable[bool]],
    *,
    hold: str = "policy_agent",
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> KilledRun:
    """Start the child, wait until it holds before ``hold`` and ``acknowledged()`` is
    true (the stores have what it wrote), then SIGKILL it.

    The child is always gone when this returns or raises.
    """
    ready = counters_path.with_name(f"{thread_id}.ready")
    log = counters_path.with_name(f"{thread_id}.child.log")
    ready.unlink(missing_ok=True)
    args = [
        sys.executable, "-m", "langgraph_dualsaver.app.crash",
        "--thread", thread_id, "--customer", customer_id,
        "--counters", str(counters_path), "--ready", str(ready), "--hold", hold,
    ]  # fmt: skip
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            args, env=dict(env) if env is not None else None, stdout=log_file, stderr=log_file
        )
    try:
        deadline = time.monotonic() + timeout
        while not (ready.exists() and await acknowledged()):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the child process exited with {proc.returncode} before holding; "
                    f"its output:\n{log.read_text(errors='replace')[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"the child process did not reach {hold} in {timeout}s")
            await asyncio.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        returncode = await asyncio.to_thread(proc.wait, 10)
        return KilledRun(pid=proc.pid, returncode=returncode, held_node=hold)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        ready.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """The child: run one case on ``DualSaver.from_env()`` and hold before ``--hold``."""
    from langgraph_dualsaver.app.counters import RunCounters
    from langgraph_dualsaver.app.graph import build_graph, new_case, thread_config
    from langgraph_dualsaver.chain.saver import DualSaver

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--thread", required=True)
    parser.add_argument("--customer", required=True)
    parser.add_argument("--counters", required=True, type=Path)
    parser.add_argument("--ready", required=True, type=Path)
    parser.add_argument("--hold", default="policy_agent")
    args = parser.parse_args(argv)
    saver = DualSaver.from_env()
    graph = build_graph(
        saver, counters=RunCounters(args.counters), on_enter=hold_before(args.hold, args.ready)
    )
    graph.invoke(new_case(args.customer), thread_config(args.thread))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
