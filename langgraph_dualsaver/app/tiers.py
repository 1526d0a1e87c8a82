"""What each tier holds for a thread, read from the stores: for the demo and notebooks."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from rich.console import Group

from langgraph_dualsaver.app.views import tiers_table

if TYPE_CHECKING:
    from langgraph_dualsaver.chain.saver import DualSaver

__all__ = ["hot_keys_left", "wait_until_cold", "where_it_lives"]


async def where_it_lives(saver: DualSaver, thread_id: str) -> Group:
    """The thread's Valkey keys and TTLs, its PostgreSQL rows, and ``saver.astats()``."""
    hot = await saver.hot.athread_info(thread_id)
    rows = await saver.durable.athread_info(thread_id)
    return tiers_table(hot, rows, await saver.astats())


async def hot_keys_left(saver: DualSaver, thread_id: str) -> int:
    """How many of the thread's keys Valkey still holds (a missing key has TTL -2)."""
    info = await saver.hot.athread_info(thread_id)
    return sum(1 for ttl in info["keys"].values() if ttl != -2)


async def wait_until_cold(saver: DualSaver, thread_id: str, timeout: float = 30.0) -> float:
    """Wait until every hot key of the thread has expired; return the seconds waited.

    Raises:
        TimeoutError: keys are still there after ``timeout`` (e.g. not yet durable,
            so not yet given their TTL).
    """
    started = time.monotonic()
    while await hot_keys_left(saver, thread_id):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"thread {thread_id!r} still has hot keys after {timeout}s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started
