"""Where a graph step's time goes, per saver: a pyinstrument profile of the case_8842
graph, and the CPU one step costs in the client, in Valkey and in PostgreSQL.

usage: python benchmarks/profile_steps.py [--invokes 150] [--concurrency 16]
                                          [--savers postgres,dual_write_behind,...]

Writes ``benchmarks/results/profiles/<saver>.txt`` (the call tree; for our savers also
``<saver>.html``, to open in a browser)
and ``benchmarks/results/profiles/cpu.json`` / ``cpu.md`` (CPU ms per step). The
servers are the benchmark's (embedded, or ``DUALSAVER_*_URL``); server CPU is read from
``/proc`` for the embedded ones (every process of the server, PostgreSQL's backends too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyinstrument import Profiler

from benchmarks.env import Servers, bench_servers
from benchmarks.savers import SAVERS, open_saver
from benchmarks.workloads import case_graph, new_thread, thread_config

OUT = Path(__file__).parent / "results" / "profiles"
DEFAULT_SAVERS = ",".join(spec.name for spec in SAVERS)
LIBRARIES = {
    "redis-py": "/redis/",
    "asyncpg": "/asyncpg/",
    "psycopg": "/psycopg",
    "langgraph": "/langgraph/",
    "langgraph_dualsaver": "/langgraph_dualsaver/",
    "msgpack / json / serde": "/ormsgpack",
    "asyncio": "/asyncio/",
}
_TICK = os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> list[int]:
    """``root`` and every process below it (PostgreSQL's backends are the postmaster's)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for root in pids:
        for pid in _tree(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime + stime, in ticks
    return total / _TICK


async def _run(graph: Any, case: Any, invokes: int, concurrency: int) -> None:
    async def worker(index: int) -> None:
        config = thread_config(new_thread(f"profile-{index}"))
        for _ in range(max(1, invokes // concurrency)):
            await graph.ainvoke(case.new_input(), config)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))


async def _profile(spec: Any, servers: Servers, invokes: int, concurrency: int) -> dict:
    case = case_graph()
    async with open_saver(spec, servers) as handle:
        graph = case.build(handle.saver)
        await _run(graph, case, concurrency, concurrency)  # warm up: connections, scripts
        await handle.settle()
        server_pids = servers.pids
        me = [os.getpid()]  # and a flush worker process, if the saver started one
        client0, servers0, wall0 = _cpu_s(me), _cpu_s(server_pids), time.perf_counter()
        profiler = Profiler(interval=0.005, async_mode="enabled")  # 5 ms: small HTML
        profiler.start()
        await _run(graph, case, invokes, concurrency)
        await handle.settle()  # durable-inclusive: the outbox drained
        profiler.stop()
        wall = time.perf_counter() - wall0
        client, server = _cpu_s(me) - client0, _cpu_s(server_pids) - servers0
        split = _split(profiler)
        OUT.mkdir(parents=True, exist_ok=True)
        if spec.ours:  # an interactive call tree of ours; a text tree of every saver
            (OUT / f"{spec.name}.html").write_text(profiler.output_html())
        (OUT / f"{spec.name}.txt").write_text(profiler.output_text(unicode=False, color=False))
    steps = max(1, invokes // concurrency) * concurrency * case.steps_per_invoke
    return {
        "saver": spec.name,
        "label": spec.label,
        "steps": steps,
        "steps_per_s": steps / wall,
        "client_cpu_ms_per_step": 1000 * client / steps,
        "server_cpu_ms_per_step": 1000 * server / steps,
        "profile_split": split,
    }


def _split(profiler: Profiler) -> dict[str, float]:
    """Share of the profiled time spent in each library's own frames."""
    session = profiler.last_session
    root = session.root_frame() if session is not None else None
    totals: dict[str, float] = {}
    todo = [(root, "")] if root is not None else []
    while todo:
        frame, parent_path = todo.pop()
        path = frame.file_path or parent_path  # "[self]" frames: their parent's code
        todo += [(child, path) for child in frame.children]
        if frame.function == "[await]":
            continue  # waiting for a server: not CPU
        name = next((lib for lib, part in LIBRARIES.items() if part in path), "other")
        totals[name] = totals.get(name, 0.0) + frame.total_self_time
    whole = sum(totals.values()) or 1.0
    return {name: share / whole for name, share in sorted(totals.items())}


def _markdown(rows: list[dict], invokes: int, concurrency: int) -> str:
    lines = [
        f"CPU per graph step, case_8842, {invokes} invokes at concurrency {concurrency}, "
        "profiled (pyinstrument adds client overhead: compare rows, not with the benchmark).",
        "",
        "| saver | steps/s | client CPU ms/step | servers CPU ms/step | total ms/step |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {row['steps_per_s']:.0f} | "
            f"{row['client_cpu_ms_per_step']:.2f} | {row['server_cpu_ms_per_step']:.2f} | "
            f"{_total(row):.2f} |"
        )
    lines += ["", *_reading(rows)]
    return "\n".join(lines) + "\n"


def _total(row: dict) -> float:
    return row["client_cpu_ms_per_step"] + row["server_cpu_ms_per_step"]


def _reading(rows: list[dict]) -> list[str]:
    by_name = {row["saver"]: row for row in rows}
    lines = []
    durable = by_name.get("postgres")
    for name in ("dual_write_behind", "dual_write_through", "dual_write_behind_worker"):
        if durable and name in by_name:
            ratio = _total(by_name[name]) / _total(durable)
            lines.append(
                f"- {by_name[name]['label']}: {ratio:.2f}x PostgresDurableSaver's CPU per "
                "step (aim <= 1.3x)."
            )
    for name in ("postgres", "redis", "dual_write_behind"):
        if name in by_name:
            split = by_name[name].get("profile_split", {})
            parts = ", ".join(
                f"{lib} {share:.0%}" for lib, share in sorted(split.items(), key=lambda i: -i[1])
            )
            lines.append(f"- {by_name[name]['label']}, profiled time by library: {parts}.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invokes", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--savers", default=DEFAULT_SAVERS)
    args = parser.parse_args()
    wanted = args.savers.split(",")
    specs = [spec for spec in SAVERS if spec.name in wanted]
    rows = []
    with bench_servers() as servers:
        for spec in specs:
            rows.append(asyncio.run(_profile(spec, servers, args.invokes, args.concurrency)))
            print(json.dumps(rows[-1]))
    (OUT / "cpu.json").write_text(json.dumps(rows, indent=2))
    (OUT / "cpu.md").write_text(_markdown(rows, args.invokes, args.concurrency))
    print(_markdown(rows, args.invokes, args.concurrency))


if __name__ == "__main__":
    main()
