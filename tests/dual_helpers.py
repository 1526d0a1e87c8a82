"""Helpers for the DualSaver tests: checkpoints to write, and direct looks at each tier."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from langgraph_dualsaver.dual import DualSaver


def config(thread_id: str, checkpoint_id: str | None = None, ns: str = "") -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def checkpoint(value: Any, version: int) -> Checkpoint:
    """A checkpoint whose one channel ``x`` holds ``value`` at ``version``."""
    ckpt = empty_checkpoint()
    ckpt["id"] = str(uuid6(clock_seq=-1))
    ckpt["channel_values"] = {"x": value}
    ckpt["channel_versions"] = {"x": version}
    return ckpt


async def put_chain(
    saver: DualSaver, thread_id: str, count: int, *, start: RunnableConfig | None = None
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


async def durable_ids(dsn: str, thread_id: str) -> list[str]:
    """Checkpoint ids PostgreSQL holds for a thread, oldest first, straight from SQL."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT checkpoint_id FROM dualsaver_checkpoints WHERE thread_id = $1 "
            "ORDER BY checkpoint_id",
            thread_id,
        )
    finally:
        await conn.close()
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


def ids_of(configs: list[RunnableConfig]) -> list[str]:
    return [c["configurable"]["checkpoint_id"] for c in configs]
