"""What each durability setting costs: write_behind, write_behind with ``replicas=1``,
with ``aof=True``, with both, and write_through, side by side in one run.

    .venv/bin/python benchmarks/durability_cost.py                 # small: about a minute
    .venv/bin/python benchmarks/durability_cost.py --puts 2000 --invokes 400

Starts its own servers: a Valkey primary and one replica (a second valkey-server with
``--replicaof``), both ``appendonly yes`` with ``appendfsync everysec``, and PostgreSQL
with fsync on. Every setting runs against the same servers, each with its own
``DualSaver`` (own prefix), in rounds that take turns so a noisy neighbour slows them
alike. Measured: the latency of ``aput`` (one thread's successive checkpoints of about
1 KB, one at a time: p50 and p95) and the case_8842 graph's steps/s at ``--concurrency``.
A put that the wait refused goes to PostgreSQL instead; those are counted, since they
would make a setting look like another. Writes ``benchmarks/results/durability_cost.md``
(``benchmarks/RESULTS.md`` links it). Only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from benchmarks.workloads import (  # noqa: E402
    CaseGraph,
    CheckpointChain,
    case_graph,
    new_thread,
    small_state,
    thread_config,
)
from langgraph_dualsaver.chain.saver import DualSaver  # noqa: E402
from langgraph_dualsaver.embedded import EmbeddedPostgres, EmbeddedValkey  # noqa: E402
from tests.servers import remove_tree, throwaway_dir  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "durability_cost.md"


@dataclass(frozen=True)
class Setting:
    label: str
    options: dict[str, Any]


SETTINGS = (
    Setting("write_behind", {}),
    Setting("write_behind + replicas=1", {"replicas": 1}),
    Setting("write_behind + aof", {"aof": True}),
    Setting("write_behind + replicas=1 + aof", {"replicas": 1, "aof": True}),
    Setting("write_through", {"mode": "write_through"}),
)


@dataclass
class Measured:
    put_s: list[float] = field(default_factory=list)
    steps: float = 0.0
    graph_s: float = 0.0


@dataclass(frozen=True)
class Servers:
    primary: EmbeddedValkey
    replica: EmbeddedValkey
    postgres: EmbeddedPostgres


def start_servers(stack: ExitStack) -> Servers:
    """Primary, replica (caught up) and PostgreSQL; each stopped (by PID) on exit."""

    def started(server: Any) -> Any:
        stack.callback(remove_tree, server.data_dir)
        stack.callback(server.stop)
        return server.start()

    primary = started(EmbeddedValkey(throwaway_dir("durability-primary-"), appendonly=True))
    replica = started(
        EmbeddedValkey(
            throwaway_dir("durability-replica-"),
            appendonly=True,
            extra_args=["--replicaof", "127.0.0.1", str(primary.port)],
        )
    )
    postgres = started(EmbeddedPostgres(throwaway_dir("durability-pg-"), durable=True))
    with redis.Redis(port=replica.port, decode_responses=True) as r:
        deadline = time.monotonic() + 30
        while r.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not connect to the primary in 30 s")
            time.sleep(0.05)
    return Servers(primary, replica, postgres)


def nearest_rank(samples: Sequence[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


async def timed_puts(saver: DualSaver, count: int, into: list[float]) -> None:
    chain = CheckpointChain(saver, new_thread("durability-put"))
    for _ in range(count):
        into.append(await chain.put(small_state(chain.step + 1)))


async def graph_round(
    saver: DualSaver, case: CaseGraph, invokes: int, concurrency: int, into: Measured
) -> None:
    graph = case.build(saver)
    turns = max(1, invokes // concurrency)

    async def worker(index: int) -> None:
        config = thread_config(new_thread(f"durability-graph-{index}"))
        for _ in range(turns):
            await graph.ainvoke(case.new_input(), config)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    into.graph_s += time.perf_counter() - started
    into.steps += turns * concurrency * case.steps_per_invoke


async def measure(
    servers: Servers, puts: int, invokes: int, concurrency: int, rounds: int
) -> tuple[dict[str, Measured], dict[str, int]]:
    """Per setting: put latencies and graph steps; and puts not acknowledged from Redis."""
    case = case_graph()
    dsn = servers.postgres.url
    measured = {s.label: Measured() for s in SETTINGS}
    async with AsyncExitStack() as stack:
        savers: dict[str, DualSaver] = {}
        for setting in SETTINGS:
            saver = DualSaver.from_conn_string(
                servers.primary.url,
                dsn,
                prefix=f"durability-{uuid.uuid4().hex[:8]}",
                **setting.options,
            )
            savers[setting.label] = await stack.enter_async_context(saver)
            await saver.asetup()
            await timed_puts(saver, 20, [])  # warm up: connections, scripts
            await graph_round(saver, case, concurrency, concurrency, Measured())
        for _ in range(rounds):
            for setting in SETTINGS:
                samples = measured[setting.label].put_s
                await timed_puts(savers[setting.label], puts // rounds, samples)
            for setting in SETTINGS:
                saver, into = savers[setting.label], measured[setting.label]
                await graph_round(saver, case, invokes // rounds, concurrency, into)
                await saver.aflush()
        degraded = {label: (await s.astats()).degraded_writes for label, s in savers.items()}
    return measured, degraded


def versions(servers: Servers) -> str:
    with redis.Redis(port=servers.primary.port, decode_responses=True) as r:
        info = r.info("server")
        fsync = r.config_get("appendfsync")["appendfsync"]
    version = info.get("valkey_version") or info.get("redis_version")
    return f"Valkey {version} primary + 1 replica, both appendonly yes, appendfsync {fsync}"


def report(
    measured: dict[str, Measured],
    degraded: dict[str, int],
    servers: str,
    args: argparse.Namespace,
    started: datetime,
) -> str:
    base = measured["write_behind"]
    base_p50 = nearest_rank(base.put_s, 50)
    base_rate = base.steps / base.graph_s
    rows = []
    for label, m in measured.items():
        p50, p95 = nearest_rank(m.put_s, 50), nearest_rank(m.put_s, 95)
        rate = m.steps / m.graph_s
        rows.append(
            f"| {label} | {p50 * 1000:.3f} | {p95 * 1000:.3f} | {p50 / base_p50:.2f}x | "
            f"{rate:,.0f} | {rate / base_rate:.2f}x | {degraded[label]} |"
        )
    cores = os.cpu_count()
    return "\n".join(
        [
            "# What each durability setting costs",
            "",
            f"Produced by `python benchmarks/durability_cost.py --puts {args.puts} --invokes "
            f"{args.invokes} --concurrency {args.concurrency} --rounds {args.rounds}` on "
            f"{cores} cores ({platform.platform()}), {started:%Y-%m-%d %H:%M} UTC. "
            f"{servers}; PostgreSQL with fsync on. Every setting ran in the same process "
            "against the same servers, in rounds that took turns: only ratios within this "
            "run mean anything.",
            "",
            f"Put: one thread's successive checkpoints (about 1 KB), one at a time, "
            f"{len(base.put_s)} per setting. Graph: the case_8842 graph, {args.invokes} "
            f"invokes per setting at concurrency {args.concurrency}, the background flusher "
            "in the process. Ratios are against write_behind (put latency: higher is "
            "slower; steps/s: lower is slower).",
            "",
            "| setting | put p50 ms | put p95 ms | p50 vs write_behind | graph steps/s "
            "| steps/s vs write_behind | puts not acknowledged from Redis |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "A put not acknowledged from Redis (its wait fell short) was written to "
            "PostgreSQL instead; a non-zero count there means the row measured some of "
            "that path too. What each setting survives is in the README "
            '("What each setting survives").',
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=300, help="timed puts per setting")
    parser.add_argument("--invokes", type=int, default=48, help="graph invokes per setting")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = datetime.now(timezone.utc)
    with ExitStack() as stack:
        servers = start_servers(stack)
        measured, degraded = asyncio.run(
            measure(servers, args.puts, args.invokes, args.concurrency, args.rounds)
        )
        text = report(measured, degraded, versions(servers), args, started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
