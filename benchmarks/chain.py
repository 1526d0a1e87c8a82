"""The chain's own measures: the outbox under sustained load, and cold against hot reads.

They open extra ``DualSaver`` instances (in the benchmarked saver's database, under a
prefix of their own) because they need settings the shared one does not have: no
background flusher, to measure how fast a backlog drains; a one-second TTL, to read
threads whose hot copy has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Any

from benchmarks.grid import Grid
from benchmarks.savers import OpenSaver
from benchmarks.workloads import (
    CheckpointChain,
    new_thread,
    percentiles,
    small_state,
    thread_config,
)

__all__ = ["cold_vs_hot", "outbox_under_load"]

Record = dict[str, Any]
SAMPLE_EVERY_S = 0.1
DRAIN_TIMEOUT = timedelta(minutes=5)
COLD_TTL = timedelta(seconds=2)


async def _warm(saver: Any, writers: int) -> list[CheckpointChain]:
    """One put per writer, then a flush: the connection pool is as large as the load
    needs and the saver has checked the server, before the clock starts."""
    chains = [CheckpointChain(saver, new_thread(f"load-{i}")) for i in range(writers)]
    await asyncio.gather(*(chain.put(small_state(0)) for chain in chains))
    await saver.aflush()
    return chains


async def _load(chains: list[CheckpointChain], seconds: float) -> int:
    """Each chain's thread gets checkpoints as fast as it can take them; returns the puts."""
    deadline = time.perf_counter() + seconds
    counts = [0] * len(chains)

    async def writer(index: int) -> None:
        chain = chains[index]
        while time.perf_counter() < deadline:
            await chain.put(small_state(chain.step + 1))
            counts[index] += 1

    await asyncio.gather(*(writer(i) for i in range(len(chains))))
    return sum(counts)


async def _sample_lag(saver: Any, started: float, done: asyncio.Event) -> list[list[float]]:
    """``[seconds, outbox length, oldest pending age]`` every SAMPLE_EVERY_S until done."""
    series = []
    while not done.is_set():
        stats = await saver.astats()
        series.append(
            [
                round(time.perf_counter() - started, 3),
                stats.outbox_length,
                round(stats.oldest_pending_age_s or 0.0, 4),
            ]
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), SAMPLE_EVERY_S)
    return series


async def outbox_under_load(handle: OpenSaver, grid: Grid) -> list[Record]:
    """Lag with the background flusher under sustained load; then drain capacity.

    Drain capacity: the same load with no flusher fills the outbox with E entries in T
    seconds (one process's put rate, E/T); one ``aflush`` then moves them (drain rate).
    """
    dual = type(handle.saver)
    assert handle.servers is not None
    records: list[Record] = []
    async with dual.from_conn_string(
        handle.servers.redis_url, handle.pg_dsn, mode="write_behind", prefix=handle.prefix + "l"
    ) as saver:
        await saver.asetup()
        chains = await _warm(saver, grid.chain_writers)
        started = time.perf_counter()
        done = asyncio.Event()
        sampler = asyncio.ensure_future(_sample_lag(saver, started, done))
        puts = await _load(chains, grid.chain_load_seconds)
        load_s = time.perf_counter() - started
        deadline = time.perf_counter() + DRAIN_TIMEOUT.total_seconds()
        while (await saver.astats()).outbox_length > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)  # poll: the background flusher is draining
        caught_up_s = time.perf_counter() - started - load_s
        done.set()
        series = await sampler
        records.append(
            {
                "measure": "outbox_lag",
                "saver": handle.name,
                "writers": grid.chain_writers,
                "load_seconds": round(load_s, 3),
                "puts": puts,
                "puts_per_s": round(puts / load_s, 1),
                "caught_up_after_load_s": round(caught_up_s, 3),
                "max_outbox_length": max((row[1] for row in series), default=0),
                "max_oldest_pending_age_s": max((row[2] for row in series), default=0.0),
                "series": series,
            }
        )
    async with dual.from_conn_string(
        handle.servers.redis_url,
        handle.pg_dsn,
        mode="write_behind",
        prefix=handle.prefix + "d",
        background_flush=False,
        max_lag=10**9,
    ) as saver:
        await saver.asetup()
        chains = await _warm(saver, grid.chain_writers)
        started = time.perf_counter()
        puts = await _load(chains, grid.chain_load_seconds)
        load_s = time.perf_counter() - started
        entries = (await saver.astats()).outbox_length
        started = time.perf_counter()
        moved = await saver.aflush(DRAIN_TIMEOUT)
        drain_s = time.perf_counter() - started
        records.append(
            {
                "measure": "outbox_drain",
                "saver": handle.name,
                "writers": grid.chain_writers,
                "load_seconds": round(load_s, 3),
                "puts": puts,
                "entries": entries,
                "put_entries_per_s": round(entries / load_s, 1),
                "drained": moved,
                "drain_seconds": round(drain_s, 4),
                "drain_entries_per_s": round(moved / drain_s, 1) if drain_s else None,
            }
        )
    return records


async def _hot_copy_gone(saver: Any, thread_ids: list[str]) -> None:
    """Wait (polling, with a deadline) until no thread has a hot copy left."""
    deadline = time.perf_counter() + 10 * COLD_TTL.total_seconds() + 10
    remaining = list(thread_ids)
    while remaining:
        info = await saver.hot.athread_info(remaining[-1])
        if not info.get("checkpoints"):
            remaining.pop()
            continue
        if time.perf_counter() > deadline:
            raise TimeoutError(f"hot copies did not expire: {info}")
        await asyncio.sleep(0.05)


async def cold_vs_hot(handle: OpenSaver, grid: Grid) -> list[Record]:
    """Latest ``aget_tuple`` of threads whose hot copy expired (read from PostgreSQL and
    put back in Redis), then of the same threads again (served by Redis)."""
    dual = type(handle.saver)
    assert handle.servers is not None
    async with dual.from_conn_string(
        handle.servers.redis_url,
        handle.pg_dsn,
        mode=handle.saver.mode,
        prefix=handle.prefix + "c",
        ttl=COLD_TTL,
    ) as saver:
        await saver.asetup()
        threads = [new_thread("cold") for _ in range(grid.cold_threads)]
        for thread_id in threads:
            chain = CheckpointChain(saver, thread_id)
            for step in range(5):
                await chain.put(small_state(step))
        await saver.aflush()
        await _hot_copy_gone(saver, threads)
        before = await saver.astats()
        cold, hot = [], []
        for thread_id in threads:
            started = time.perf_counter()
            found = await saver.aget_tuple(thread_config(thread_id))
            cold.append(time.perf_counter() - started)
            if found is None:
                raise AssertionError(f"thread {thread_id} was lost")
        for thread_id in threads:
            started = time.perf_counter()
            await saver.aget_tuple(thread_config(thread_id))
            hot.append(time.perf_counter() - started)
        after = await saver.astats()
    counters = {
        "backfills": after.backfills - before.backfills,
        "hot_hits": after.hot_hits - before.hot_hits,
        "hot_misses": after.hot_misses - before.hot_misses,
    }
    return [
        {
            "measure": "cold_read",
            "saver": handle.name,
            "read": "cold",
            **percentiles(cold),
            **counters,
        },
        {
            "measure": "cold_read",
            "saver": handle.name,
            "read": "hot",
            **percentiles(hot),
            **counters,
        },
    ]
