"""The measurements, one coroutine each: ``(saver, grid) -> records``.

Every record is a flat dict with a ``measure`` key; latencies are milliseconds.
Times are wall-clock around the awaited call (``time.perf_counter``), after a few
unrecorded warm-up calls.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from benchmarks.grid import Grid
from benchmarks.savers import OpenSaver
from benchmarks.workloads import (
    CHANNELS,
    CaseGraph,
    CheckpointChain,
    conversation_graph,
    conversation_steps_per_turn,
    human_turn,
    new_thread,
    percentiles,
    small_state,
    text_of_size,
    thread_config,
)

__all__ = [
    "bytes_per_step",
    "floors",
    "graph_throughput",
    "history_scaling",
    "merge_graph_rounds",
    "raw_ops",
    "state_size_scaling",
]

Record = dict[str, Any]
FILL_CONCURRENCY = 16


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def _samples(call: Callable[[], Awaitable[Any]], n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await call()
    return [await _timed(call) for _ in range(n)]


async def _self_timed(call: Callable[[], Awaitable[float]], n: int, warmup: int) -> list[float]:
    """Samples of a call that times itself (``CheckpointChain.put`` times only ``aput``,
    not the building of the checkpoint)."""
    for _ in range(warmup):
        await call()
    return [await call() for _ in range(n)]


async def _all_or_none(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``coros`` concurrently; if one fails, cancel the others before raising."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after}


def _failed(measure: str, handle: OpenSaver, exc: BaseException, **where: Any) -> Record:
    """A failed point of a measure: the harness moves it to the run's errors."""
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return {"measure": measure, "saver": handle.name, **where, "error": message}


# -- 1. the case_8842 graph ------------------------------------------------------------


async def graph_throughput(handle: OpenSaver, grid: Grid, case: CaseGraph) -> list[Record]:
    """Steps/s and per-invoke latency at each concurrency (one thread per worker)."""
    graph = case.build(handle.saver)
    await graph.ainvoke(case.new_input(), thread_config(new_thread("warm")))
    records = []
    for concurrency in grid.graph_concurrency:
        turns = max(1, grid.graph_invokes // concurrency)
        latencies: list[float] = []

        async def worker(
            index: int,
            label: str = f"graph-c{concurrency}",
            turns: int = turns,
            out: list[float] = latencies,
        ) -> None:
            config = thread_config(new_thread(f"{label}-{index}"))
            for _ in range(turns):
                started = time.perf_counter()
                await graph.ainvoke(case.new_input(), config)
                out.append(time.perf_counter() - started)

        counters = await handle.counters()
        started = time.perf_counter()
        try:
            await _all_or_none([worker(i) for i in range(concurrency)])
        except Exception as exc:  # this level fails alone; the next levels still run
            records.append(_failed("graph", handle, exc, concurrency=concurrency))
            await handle.settle()
            continue
        # Durable-inclusive: the clock stops once the write_behind outbox has drained
        # too, so no work hides in a backlog (other savers have nothing to settle).
        invoked = time.perf_counter()
        await handle.settle()
        elapsed = time.perf_counter() - started
        invokes = len(latencies)
        steps = invokes * case.steps_per_invoke
        records.append(
            {
                "measure": "graph_round",
                "saver": handle.name,
                "concurrency": concurrency,
                "invokes": invokes,
                "steps": steps,
                "seconds": round(elapsed, 4),
                "settle_seconds": round(elapsed - (invoked - started), 4),
                "steps_per_s": round(steps / elapsed, 2),
                **percentiles(latencies),
                "latencies_ms": [round(x * 1000, 3) for x in latencies],
                "counters": _delta(counters, await handle.counters()),
            }
        )
    return records


def merge_graph_rounds(rounds: list[Record]) -> list[Record]:
    """One ``graph`` record per (saver, concurrency): the median round's steps/s, the
    percentiles of every round's invokes, the fallback counters summed."""
    groups: dict[tuple[str, int], list[Record]] = {}
    for record in rounds:
        groups.setdefault((record["saver"], record["concurrency"]), []).append(record)
    merged = []
    for (saver, concurrency), group in groups.items():
        rates = sorted(r["steps_per_s"] for r in group)
        latencies = [x / 1000 for r in group for x in r["latencies_ms"]]
        counters: dict[str, int] = {}
        for r in group:
            for name, value in r["counters"].items():
                counters[name] = counters.get(name, 0) + value
        merged.append(
            {
                "measure": "graph",
                "saver": saver,
                "concurrency": concurrency,
                "rounds": len(group),
                "round_steps_per_s": [r["steps_per_s"] for r in group],
                "invokes": sum(r["invokes"] for r in group),
                "steps": sum(r["steps"] for r in group),
                "steps_per_s": statistics.median(rates),
                **percentiles(latencies),
                "counters": counters,
            }
        )
    return merged


# -- 2. raw operations -------------------------------------------------------------------


async def _op_samples(chain: CheckpointChain, grid: Grid, n: int) -> dict[str, list[float]]:
    """Samples of the five operations on ``chain``'s thread, reads first."""
    saver = chain.saver
    latest = thread_config(chain.thread_id)
    by_id = thread_config(chain.thread_id, chain.ids[len(chain.ids) // 2])

    async def list10() -> None:
        async for _ in saver.alist(latest, limit=10):
            pass

    samples = {
        "aget_tuple_latest": await _samples(lambda: saver.aget_tuple(latest), n, grid.warmup),
        "aget_tuple_by_id": await _samples(lambda: saver.aget_tuple(by_id), n, grid.warmup),
        "alist_10": await _samples(list10, n, grid.warmup),
    }
    step = chain.step
    samples["aput"] = await _self_timed(lambda: chain.put(small_state(step)), n, grid.warmup)

    async def put_writes() -> None:
        writes = [("messages", {"role": "assistant", "content": "ok"}), ("current_step", "x")]
        await saver.aput_writes(chain.config, writes, str(uuid.uuid4()), "~__pregel_pull, node")

    samples["aput_writes"] = await _samples(put_writes, n, grid.warmup)
    return samples


async def raw_ops(handle: OpenSaver, grid: Grid) -> list[Record]:
    """p50/p99 of each operation on a thread of 10 checkpoints with about 1 KB of state."""
    chain = CheckpointChain(handle.saver, new_thread("ops"))
    for step in range(10):
        await chain.put(small_state(step))
    samples = await _op_samples(chain, grid, grid.op_samples)
    return [
        {"measure": "ops", "saver": handle.name, "op": op, **percentiles(values)}
        for op, values in samples.items()
    ]


# -- 3. scaling curves -------------------------------------------------------------------


async def _fill(chain: CheckpointChain, count: int) -> None:
    """Put ``count`` more checkpoints, a few at a time (ids stay in order: uuid6)."""
    pending: set[asyncio.Task[float]] = set()
    for _ in range(count):
        if len(pending) >= FILL_CONCURRENCY:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        # Fill steps change one tiny channel: the history's length is what is measured.
        checkpoint, metadata, versions = chain.next({"fill": chain.step + 1})
        pending.add(
            asyncio.ensure_future(chain.saver.aput(chain.config, checkpoint, metadata, versions))
        )
    if pending:
        await asyncio.gather(*pending)
    chain.config = thread_config(chain.thread_id, chain.ids[-1])


async def history_scaling(handle: OpenSaver, grid: Grid) -> list[Record]:
    """Each operation's latency on one thread as its history grows."""
    chain = CheckpointChain(handle.saver, new_thread("history"))
    records = []
    for length in grid.history_lengths:
        await _fill(chain, length - len(chain.ids))
        await handle.settle()
        samples = await _op_samples(chain, grid, grid.history_samples)
        for op, values in samples.items():
            records.append(
                {
                    "measure": "history",
                    "saver": handle.name,
                    "history": length,
                    "op": op,
                    **percentiles(values),
                }
            )
        await handle.settle()
    return records


async def state_size_scaling(handle: OpenSaver, grid: Grid) -> list[Record]:
    """Each operation's latency when every put writes a state of the given size."""
    records = []
    for size in grid.state_sizes:
        n = grid.samples_for_size(size)
        payload = text_of_size(size, seed=size)
        chain = CheckpointChain(handle.saver, new_thread(f"size{size}"))
        for step in range(2):
            await chain.put({"document": payload, "step": step})
        latest = thread_config(chain.thread_id)
        by_id = thread_config(chain.thread_id, chain.ids[0])

        async def list10(latest: dict = latest) -> None:
            async for _ in handle.saver.alist(latest, limit=10):
                pass

        samples = {
            "aput": await _self_timed(
                lambda chain=chain, payload=payload: chain.put({"document": payload}), n, 1
            ),
        }
        await handle.settle()
        samples["aget_tuple_latest"] = await _samples(
            lambda latest=latest: handle.saver.aget_tuple(latest), n, 1
        )
        samples["aget_tuple_by_id"] = await _samples(
            lambda by_id=by_id: handle.saver.aget_tuple(by_id), n, 1
        )
        samples["alist_10"] = await _samples(list10, n, 1)
        for op, values in samples.items():
            records.append(
                {
                    "measure": "state_size",
                    "saver": handle.name,
                    "size_bytes": size,
                    "op": op,
                    **percentiles(values),
                }
            )
        await handle.saver.adelete_thread(chain.thread_id)
        await handle.settle()
    return records


async def bytes_per_step(handle: OpenSaver, grid: Grid) -> list[Record]:
    """Bytes written per graph step as a conversation grows, plain vs DeltaChannel."""
    records = []
    turns = max(1, grid.conversation_messages // 2)
    for channel in CHANNELS:
        graph = conversation_graph(channel, handle.saver)
        steps_per_turn = conversation_steps_per_turn(channel)
        thread_id = new_thread(f"chat-{channel}")
        config = thread_config(thread_id)
        messages, per_step, seconds = [], [], []
        before = await handle.stored_bytes(thread_id)
        deadline = time.perf_counter() + grid.conversation_budget_s
        for turn in range(turns):
            if time.perf_counter() > deadline:
                break  # recorded: the series ends short of the grid's length
            started = time.perf_counter()
            await graph.ainvoke(human_turn(turn), config)
            seconds.append(round(time.perf_counter() - started, 6))
            after = await handle.stored_bytes(thread_id)
            per_step.append(round((after - before) / steps_per_turn, 1))
            messages.append(2 * (turn + 1))
            before = after
        records.append(
            {
                "measure": "bytes_per_step",
                "saver": handle.name,
                "channel": channel,
                "metric": handle.spec.bytes_metric,
                "messages": messages,
                "bytes_per_step": per_step,
                "seconds_per_turn": seconds,
            }
        )
    return records


# -- the floors: what one round trip costs ---------------------------------------------


async def floors(redis_url: str, postgres_dsn: str, grid: Grid) -> list[Record]:
    """One Redis MULTI/EXEC pipeline (HSET + ZADD) and one asyncpg INSERT (autocommit)."""
    payload = text_of_size(1024).encode()
    client = aioredis.Redis.from_url(redis_url)
    counter = iter(range(10**9))
    try:

        async def pipeline() -> None:
            i = next(counter)
            pipe = client.pipeline(transaction=True)
            pipe.hset("bench-floor:{t}:h", str(i), payload)
            pipe.zadd("bench-floor:{t}:z", {str(i): i})
            await pipe.execute()

        redis_samples = await _samples(pipeline, grid.floor_samples, grid.warmup)
        await client.delete("bench-floor:{t}:h", "bench-floor:{t}:z")
    finally:
        await client.aclose()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("CREATE TABLE bench_floor (id text PRIMARY KEY, data bytea NOT NULL)")

        async def insert() -> None:
            await conn.execute(
                "INSERT INTO bench_floor (id, data) VALUES ($1, $2)", str(next(counter)), payload
            )

        pg_samples = await _samples(insert, grid.floor_samples, grid.warmup)
        await conn.execute("DROP TABLE bench_floor")
    finally:
        await conn.close()
    return [
        {"measure": "floor", "floor": "redis_pipeline", **percentiles(redis_samples)},
        {"measure": "floor", "floor": "asyncpg_insert_commit", **percentiles(pg_samples)},
    ]
