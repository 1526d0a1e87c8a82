"""Live measurements on the real stores, for notebook 04's pictures.

* ``burst_lag``: many case_8842 runs at once on a write_behind saver, the outbox sampled
  until the background flusher has caught up.
* ``expired_threads`` and ``read_latencies``: threads whose hot copy has expired, read
  cold (PostgreSQL answers and the thread is put back in Valkey), then hot.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from langgraph_dualsaver.app.graph import build_graph, new_case, new_thread_id, thread_config
from langgraph_dualsaver.app.services import SEED_CUSTOMER
from langgraph_dualsaver.app.tiers import wait_until_cold

if TYPE_CHECKING:
    from langgraph_dualsaver.chain.saver import DualSaver, DualStats

__all__ = [
    "BurstTrace",
    "LagSample",
    "ReadLatencies",
    "burst_lag",
    "expired_threads",
    "read_latencies",
]


@dataclass(frozen=True, slots=True)
class LagSample:
    at_ms: float
    """Since the burst started."""
    lag: int
    """Outbox entries not yet durable (``stats().outbox_length``)."""
    durable: int
    """Entries this saver's flusher has made durable since the burst started."""


@dataclass(frozen=True, slots=True)
class BurstTrace:
    runs: int
    samples: tuple[LagSample, ...]
    last_write_ms: float
    """When the burst's last run returned: its last checkpoint was written."""
    caught_up_ms: float
    """The first sample after that with an empty outbox."""

    @property
    def entries(self) -> int:
        """Outbox entries the burst wrote (all of them durable by the last sample)."""
        return self.samples[-1].durable

    @property
    def peak_lag(self) -> int:
        return max(sample.lag for sample in self.samples)


def _outbox_length(stats: DualStats) -> int:
    if stats.outbox_length is None:
        raise RuntimeError("Redis is unreachable: the outbox cannot be read")
    return stats.outbox_length


async def _runs_at_once(saver: DualSaver, runs: int) -> float:
    """Run ``runs`` cases concurrently; return when the last one returned."""
    graph = build_graph(saver)
    await asyncio.gather(*(
        graph.ainvoke(new_case(SEED_CUSTOMER), thread_config(new_thread_id()))
        for _ in range(runs)
    ))  # fmt: skip
    return time.perf_counter()


async def burst_lag(
    saver: DualSaver, runs: int = 40, every_s: float = 0.005, timeout_s: float = 60.0
) -> BurstTrace:
    """Start ``runs`` case_8842 runs at once on ``saver`` and sample its outbox every
    ``every_s`` until every run has returned and the outbox is empty.

    ``saver`` should be write_behind with its background flusher on, and its prefix
    otherwise idle: the outbox length counts every writer's entries.

    Raises:
        TimeoutError: the outbox is still not empty after ``timeout_s``.
    """
    flushed = (await saver.astats()).flushed
    started = time.perf_counter()
    burst = asyncio.ensure_future(_runs_at_once(saver, runs))
    samples: list[LagSample] = []
    try:
        while True:
            done = burst.done()
            stats = await saver.astats()
            now = time.perf_counter()
            lag = _outbox_length(stats)
            samples.append(LagSample((now - started) * 1000, lag, stats.flushed - flushed))
            if done and lag == 0:
                last_write = burst.result()  # a run that failed fails the measurement
                return BurstTrace(runs, tuple(samples), (last_write - started) * 1000,
                                  (now - started) * 1000)  # fmt: skip
            if now - started > timeout_s:
                raise TimeoutError(f"the outbox still holds {lag} entries after {timeout_s}s")
            await asyncio.sleep(every_s)  # the sampling period
    finally:
        burst.cancel()


async def expired_threads(saver: DualSaver, count: int) -> list[str]:
    """Run ``count`` cases at once on ``saver`` (give it a short TTL), then wait until
    every hot key of them has expired: each lives in PostgreSQL only."""
    graph = build_graph(saver)
    thread_ids = [new_thread_id() for _ in range(count)]
    await asyncio.gather(
        *(graph.ainvoke(new_case(SEED_CUSTOMER), thread_config(t)) for t in thread_ids)
    )
    await asyncio.gather(*(wait_until_cold(saver, t) for t in thread_ids))
    return thread_ids


@dataclass(frozen=True, slots=True)
class ReadLatencies:
    cold_ms: list[float]
    hot_ms: list[float]
    misses: int
    """Valkey misses counted during the cold reads (one per thread if all were cold)."""
    backfills: int
    """Threads put back in Valkey by the cold reads."""
    hits: int
    """Valkey hits counted during the hot reads."""


async def _timed_read(saver: DualSaver, thread_id: str) -> float:
    started = time.perf_counter()
    found = await saver.aget_tuple(thread_config(thread_id))
    elapsed = (time.perf_counter() - started) * 1000
    if found is None:
        raise LookupError(f"no checkpoint for thread {thread_id!r} in either tier")
    return elapsed


async def read_latencies(saver: DualSaver, thread_ids: list[str]) -> ReadLatencies:
    """Read the latest checkpoint of each thread (``expired_threads``) one at a time:
    first cold, then, once the cold reads have put them back, hot. The first thread
    is read once each way beforehand and not counted (connections, statement caches)."""
    warm, *measured = thread_ids
    await _timed_read(saver, warm)
    await _timed_read(saver, warm)
    before = await saver.astats()
    cold = [await _timed_read(saver, t) for t in measured]
    middle = await saver.astats()
    hot = [await _timed_read(saver, t) for t in measured]
    after = await saver.astats()
    return ReadLatencies(
        cold_ms=cold,
        hot_ms=hot,
        misses=middle.hot_misses - before.hot_misses,
        backfills=middle.backfills - before.backfills,
        hits=after.hot_hits - middle.hot_hits,
    )
