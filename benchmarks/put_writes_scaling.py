"""How ``put_writes`` scales with the writes a checkpoint already has.

    python benchmarks/put_writes_scaling.py                 # starts its own Valkey
    python benchmarks/put_writes_scaling.py --url redis://127.0.0.1:6379/0

For each size, a fresh thread gets one checkpoint and that many pending writes, then
``aput_writes`` of one more write (``--value-bytes`` long) is timed ``--samples`` times.
The sizes take turns sample by sample. Printed per size: the client-side p50 and p90
in ms, and the server-side p50 (the EVALSHA time in ``INFO commandstats``: how long
Redis was blocked). Aim: client p50 at the largest size within 1.2x the p50 at the
smallest. The machine may be shared, so only ratios
within one run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from langchain_core.runnables import RunnableConfig  # noqa: E402
from langgraph.checkpoint.base import empty_checkpoint  # noqa: E402

from langgraph_dualsaver.embedded import EmbeddedValkey  # noqa: E402
from langgraph_dualsaver.hot.saver import RedisHotSaver  # noqa: E402
from tests.servers import remove_tree, throwaway_dir  # noqa: E402

AIM_RATIO = 1.2
GROWTH = 0.1
"""The most a measured checkpoint grows (as a share of its size) by the timed writes."""
FILL_BATCH = 100
"""Existing writes are added this many (one task's) per ``aput_writes``."""


async def checkpoint_config(saver: RedisHotSaver) -> RunnableConfig:
    """A fresh thread with one checkpoint; its config."""
    thread = {"configurable": {"thread_id": f"scaling-{uuid.uuid4().hex}", "checkpoint_ns": ""}}
    cp = empty_checkpoint()
    cp["channel_values"], cp["channel_versions"] = {"a": 1}, {"a": "1"}
    return await saver.aput(thread, cp, {"step": 0}, {"a": "1"})


async def fill(saver: RedisHotSaver, config: RunnableConfig, existing: int, value: str) -> None:
    """``existing`` pending writes on the checkpoint, ``FILL_BATCH`` per task."""
    for start in range(0, existing, FILL_BATCH):
        count = min(FILL_BATCH, existing - start)
        await saver.aput_writes(config, [("a", value)] * count, f"fill-{start}")


async def evalsha_usec(saver: RedisHotSaver) -> float:
    """Server time (usec) spent in EVALSHA so far, from the command stats."""
    stats = await (await saver.aclient()).info("commandstats")
    return float(stats.get("cmdstat_evalsha", {"usec": 0})["usec"])


async def timed_put_writes(
    saver: RedisHotSaver, config: RunnableConfig, value: str, task_id: str
) -> tuple[float, float]:
    """``(client ms, server ms)`` of one ``aput_writes`` of one write."""
    before = await evalsha_usec(saver)
    began = time.perf_counter()
    await saver.aput_writes(config, [("a", value)], task_id)
    client_ms = (time.perf_counter() - began) * 1000
    return client_ms, (await evalsha_usec(saver) - before) / 1000


def summary(client: list[float], server: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(client, n=10)
    return {"p50": statistics.median(client), "p90": cuts[8], "server": statistics.median(server)}


async def measure(
    saver: RedisHotSaver, sizes: Sequence[int], samples: int, value: str
) -> dict[int, dict[str, float]]:
    """Per size, client p50/p90 and server p50 (ms) of ``aput_writes``. The sizes take
    turns, sample by sample, so a noisy neighbour slows them alike; each size's samples
    go round enough checkpoints that none grows by more than ``GROWTH``."""
    configs: dict[int, list[RunnableConfig]] = {}
    for size in sizes:
        configs[size] = []
        for _ in range(math.ceil(samples / max(1, int(size * GROWTH)))):
            configs[size].append(await checkpoint_config(saver))
            await fill(saver, configs[size][-1], size, value)
    client: dict[int, list[float]] = {size: [] for size in sizes}
    server: dict[int, list[float]] = {size: [] for size in sizes}
    for i in range(samples):
        for size in sizes:
            config = configs[size][i % len(configs[size])]
            client_ms, server_ms = await timed_put_writes(saver, config, value, f"t-{i}")
            client[size].append(client_ms)
            server[size].append(server_ms)
    return {size: summary(client[size], server[size]) for size in sizes}


async def run(
    url: str, sizes: Sequence[int], samples: int, value_bytes: int
) -> dict[int, dict[str, float]]:
    value = "x" * value_bytes
    prefix = f"scaling-{uuid.uuid4().hex[:8]}"
    async with RedisHotSaver.from_conn_string(url, prefix=prefix) as saver:
        await saver.asetup()
        await measure(saver, sizes[:1], 50, value)  # warm up: connections, scripts
        return await measure(saver, sizes, samples, value)


def report(results: dict[int, dict[str, float]]) -> str:
    lines = [f"{'existing writes':>16} {'p50 ms':>8} {'p90 ms':>8} {'server p50 ms':>15}"]
    for size, row in results.items():
        lines.append(f"{size:>16,} {row['p50']:>8.3f} {row['p90']:>8.3f} {row['server']:>15.4f}")
    sizes = list(results)
    ratio = results[sizes[-1]]["p50"] / results[sizes[0]]["p50"]
    verdict = "meets" if ratio <= AIM_RATIO else "misses"
    lines.append(
        f"p50 at {sizes[-1]:,} / p50 at {sizes[0]:,} = {ratio:.2f}x ({verdict} the aim of <= "
        f"{AIM_RATIO}x)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running Redis/Valkey; default: start an embedded Valkey")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 4000])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--value-bytes", type=int, default=4000, help="each write's value")
    args = parser.parse_args(argv)
    server = None
    if args.url is None:
        server = EmbeddedValkey(throwaway_dir("put-writes-scaling-")).start()
    try:
        url = args.url or server.url
        results = asyncio.run(run(url, args.sizes, args.samples, args.value_bytes))
    finally:
        if server is not None:
            server.stop()
            remove_tree(server.data_dir)
    print(f"put_writes of one {args.value_bytes}-byte value, {args.samples} samples per size")
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
