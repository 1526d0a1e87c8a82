"""What ``exclusive_runs=True`` costs: the case_8842 graph's steps/s with it off and on,
in both chain modes, at concurrency 1 and 16, side by side in one run.

    .venv/bin/python benchmarks/exclusive_cost.py            # starts its own servers
    .venv/bin/python benchmarks/exclusive_cost.py --quick    # a smoke run: seconds
    .venv/bin/python benchmarks/exclusive_cost.py --redis-url ... --postgres-url ...

Per mode and concurrency, two ``DualSaver`` (own prefixes, same servers), off and on,
run the same rounds taking turns (the order flips each round), so a noisy neighbour
slows them alike. Each of the ``concurrency`` workers invokes the graph on its own
thread, run after run (so every run after the first takes a lease its predecessor let
go). The claim rides in the put's own STORE script: no extra round trip. Writes
``exclusive_cost.json`` and ``exclusive_cost.md`` to ``--out``
(default ``benchmarks/results``). Only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack, ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.workloads import CaseGraph, case_graph, new_thread, thread_config  # noqa: E402
from langgraph_dualsaver.chain.saver import MODES, DualSaver  # noqa: E402
from langgraph_dualsaver.embedded import EmbeddedPostgres, EmbeddedValkey  # noqa: E402
from tests.servers import remove_tree, throwaway_dir  # noqa: E402

CONCURRENCY = (1, 16)
SETTINGS = ("off", "on")
AIM = 0.95
"""Issue 14: graph steps/s with exclusive runs on within 5% of off."""


async def graph_round(saver: DualSaver, case: CaseGraph, turns: int, concurrency: int) -> float:
    """Seconds for ``concurrency`` workers to run ``turns`` invokes each, on a thread each."""
    graph = case.build(saver)

    async def worker(index: int) -> None:
        config = thread_config(new_thread(f"exclusive-cost-{index}"))
        for _ in range(turns):
            await graph.ainvoke(case.new_input(), config)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return time.perf_counter() - started


async def measure(
    redis_url: str, postgres_url: str, rounds: int, turns: int
) -> dict[str, dict[str, Any]]:
    """Per ``mode@concurrency``: each setting's steps/s per round and overall."""
    case = case_graph()
    results: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        async with AsyncExitStack() as stack:
            savers: dict[str, DualSaver] = {}
            for setting in SETTINGS:
                saver = DualSaver.from_conn_string(
                    redis_url,
                    postgres_url,
                    mode=mode,
                    prefix=f"exclusive-cost-{uuid.uuid4().hex[:8]}",
                    exclusive_runs=setting == "on",
                )
                savers[setting] = await stack.enter_async_context(saver)
                await saver.asetup()
            for concurrency in CONCURRENCY:
                for saver in savers.values():  # warm up: connections, scripts, caches
                    await graph_round(saver, case, 1, concurrency)
                seconds: dict[str, list[float]] = {s: [] for s in SETTINGS}
                for r in range(rounds):
                    order = SETTINGS if r % 2 == 0 else SETTINGS[::-1]
                    for setting in order:
                        spent = await graph_round(savers[setting], case, turns, concurrency)
                        seconds[setting].append(spent)
                        await savers[setting].aflush()
                steps = turns * concurrency * case.steps_per_invoke
                results[f"{mode}@{concurrency}"] = {
                    "mode": mode,
                    "concurrency": concurrency,
                    "steps_per_round": steps,
                    "rate": {s: steps * rounds / sum(v) for s, v in seconds.items()},
                    "round_rates": {s: [steps / x for x in v] for s, v in seconds.items()},
                }
            for setting, saver in savers.items():
                stats = await saver.astats()
                assert stats.degraded_writes == 0, (mode, setting, stats)
    return results


def report(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, source: str, load: str
) -> str:
    lines = [
        "# What exclusive runs cost",
        "",
        f"`python benchmarks/exclusive_cost.py --rounds {args.rounds} --turns {args.turns}` on "
        f"{platform.machine()}, Python {platform.python_version()}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d}, {os.cpu_count()} CPUs, load average "
        f"{load}: the case_8842 graph ({source}), "
        f"{args.rounds} rounds per setting taking turns, each worker running {args.turns} "
        "invokes on its own thread per round; `DualSaver` with `exclusive_runs` off and on.",
        "",
        "| mode | concurrency | steps/s off | steps/s on | on vs off | per-round on/off: "
        "median (min-max) | aim (>= 0.95) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in results.values():
        off, on = row["rate"]["off"], row["rate"]["on"]
        ratios = [
            b / a for a, b in zip(row["round_rates"]["off"], row["round_rates"]["on"], strict=True)
        ]
        spread = f"{statistics.median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})"
        met = "met" if on / off >= AIM else "**missed**"
        lines.append(
            f"| {row['mode']} | {row['concurrency']} | {off:,.0f} | {on:,.0f} | "
            f"{on / off:.3f} | {spread} | {met} |"
        )
    lines += [
        "",
        "With it on, every root write carries its claim (holder, lease, the parent and the "
        "head it expects) in the put's own STORE script: the same one round trip, a few "
        "more arguments and a few lookups inside the script (`TIME`, `HMGET`, `ZRANGE`; an "
        "`HSET` once a tenth of the lease has run). Where the per-round ratios spread wider "
        "than the aim, the machine's noise, not the setting, decides met or missed. Only "
        "ratios within one run mean anything.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--redis-url", help="a running Redis/Valkey; default: start one")
    parser.add_argument("--postgres-url", help="a running PostgreSQL; default: start one")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--turns", type=int, default=4, help="invokes per worker per round")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 invoke: a smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.turns = 2, 1
    started_pids: list[int] = []
    with ExitStack() as stack:
        redis_url, postgres_url = args.redis_url, args.postgres_url
        for kind in ("valkey", "postgres"):
            if (redis_url if kind == "valkey" else postgres_url) is not None:
                continue
            workdir = throwaway_dir(f"exclusive-cost-{kind}-")
            stack.callback(remove_tree, workdir)
            server: Any = EmbeddedValkey(workdir) if kind == "valkey" else EmbeddedPostgres(workdir)
            stack.callback(server.stop)
            server.start()
            started_pids.append(server.pid)
            if kind == "valkey":
                redis_url = server.url
            else:
                postgres_url = server.url
        load_before = os.getloadavg()[0]
        results = asyncio.run(measure(redis_url, postgres_url, args.rounds, args.turns))
        load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    source = case_graph().source
    text = report(results, args, source, load)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "exclusive_cost.md").write_text(text)
    doc = {
        "results": results,
        "aim": AIM,
        "rounds": args.rounds,
        "turns": args.turns,
        "servers": {"started_pids": started_pids},
        "pid": os.getpid(),
    }
    (args.out / "exclusive_cost.json").write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
