"""Helpers every test file shares: configs and checkpoints to write, direct looks at
each store, polling, and the DeltaChannel graph the history, prune and copy tests run."""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import asyncpg
from langchain_core.runnables import RunnableConfig
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

# -- configs and checkpoints ------------------------------------------------------------


def config(
    thread_id: Any = None, checkpoint_id: Any = None, ns: Any = "", **configurable: Any
) -> RunnableConfig:
    """The config of a thread (and of one checkpoint in it). ``thread_id=None`` leaves
    it out, as bad-input tests need; other keys go into ``configurable`` as given."""
    configurable = {"checkpoint_ns": ns, **configurable}
    if thread_id is not None:
        configurable["thread_id"] = thread_id
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def run_config(thread_id: str) -> RunnableConfig:
    """The config of a graph run as an application passes it: the thread only."""
    return {"configurable": {"thread_id": thread_id}}


def checkpoint(value: Any, version: Any) -> Checkpoint:
    """A checkpoint whose one channel ``x`` holds ``value`` at ``version``."""
    return checkpoint_of({"x": value}, {"x": version})


def checkpoint_of(values: dict[str, Any], versions: dict[str, Any]) -> Checkpoint:
    """A new checkpoint (a fresh, increasing id) holding ``values`` at ``versions``."""
    ckpt = empty_checkpoint()
    ckpt["id"] = str(uuid6(clock_seq=-1))
    ckpt["channel_values"] = values
    ckpt["channel_versions"] = versions
    return ckpt


async def put_chain(
    saver: BaseCheckpointSaver, thread_id: str, count: int, *, start: RunnableConfig | None = None
) -> list[RunnableConfig]:
    """``count`` checkpoints, each the child of the previous one; returns their configs."""
    parent = start or config(thread_id)
    saved = []
    for step in range(count):
        parent = await saver.aput(
            parent,
            checkpoint(f"v{step}", step + 1),
            {"source": "loop", "step": step},
            {"x": step + 1},
        )
        saved.append(parent)
    return saved


def ids_of(configs: list[RunnableConfig]) -> list[str]:
    return [c["configurable"]["checkpoint_id"] for c in configs]


async def drain(items: AsyncIterator[Any]) -> list[Any]:
    """Every item of an async iterator (an ``alist``), in order."""
    return [item async for item in items]


# -- direct looks at the stores -----------------------------------------------------------


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of one query on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def durable_ids(dsn: str, thread_id: str) -> list[str]:
    """Checkpoint ids PostgreSQL holds for a thread, oldest first, straight from SQL."""
    rows = await fetch(
        dsn,
        "SELECT checkpoint_id FROM dualsaver_checkpoints WHERE thread_id = $1 "
        "ORDER BY checkpoint_id",
        thread_id,
    )
    return [r["checkpoint_id"] for r in rows]


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} did not hold within {timeout}s")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """``eventually`` for a synchronous check."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        time.sleep(0.02)


# -- a DeltaChannel graph -------------------------------------------------------------------


def extend(state: list[str], writes: list[list[str]]) -> list[str]:
    return state + [item for write in writes for item in write]


class Chat(TypedDict):
    items: Annotated[list[str], DeltaChannel(extend, snapshot_frequency=3)]
    log: Annotated[list[str], operator.add]
    n: int


def chat_graph(saver: BaseCheckpointSaver, stop: int) -> Any:
    """Each step appends ``i<n>`` to the delta channel ``items`` until ``n == stop``."""
    builder = StateGraph(Chat)
    builder.add_node("step", lambda s: {"items": [f"i{s['n']}"], "log": ["s"], "n": s["n"] + 1})
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", lambda s: END if s["n"] >= stop else "step")
    return builder.compile(checkpointer=saver)


DELTA_ITEMS = ["i0", "i1", "i2", "i3", "forked", "i4", "i5", "i6", "i7", "i8"]
"""``items`` at the head of ``delta_thread``."""


async def delta_thread(saver: BaseCheckpointSaver, thread_id: str) -> Any:
    """Eight steps, then a fork from step 4 that runs on to n=9: the latest checkpoint
    is two updates past its last snapshot (snapshot_frequency=3). Returns the graph."""
    graph = chat_graph(saver, 8)
    cfg = config(thread_id)
    await graph.ainvoke({"items": [], "log": [], "n": 0}, cfg)
    history = [s async for s in graph.aget_state_history(cfg)]
    past = next(s for s in history if s.metadata["step"] == 4)
    forked = await graph.aupdate_state(past.config, {"items": ["forked"]}, as_node="step")
    await chat_graph(saver, 9).ainvoke(None, forked)
    return graph
