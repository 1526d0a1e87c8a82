"""scale.md and scale.png from the scale benchmark's JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["render_markdown", "render_plot"]


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) < 10 and digits:
        return f"{value:,.{max(digits, 2)}f}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def render_plot(doc: dict[str, Any], path: Path) -> None:
    """Left: total steps/s against application processes, one line per worker count.
    Right: the outbox length over time in each configuration."""
    configs = [c for c in doc["configs"] if c["kind"] == "concurrent"]
    fig, (rates, lag) = plt.subplots(1, 2, figsize=(12, 4.5))
    for workers in sorted({c["workers"] for c in configs}):
        rows = sorted((c for c in configs if c["workers"] == workers), key=lambda c: c["apps"])
        rates.plot(
            [c["apps"] for c in rows], [c["steps_per_s"] for c in rows], marker="o",
            label=f"{workers} flush worker(s)",
        )  # fmt: skip
    rates.set_xlabel("application processes")
    rates.set_ylabel("graph steps/s (all processes)")
    rates.set_xticks(sorted({c["apps"] for c in configs}))
    rates.set_title("case_8842 steps/s, write_behind")
    rates.legend()
    for c in doc["configs"]:
        series = c["series"]
        style = "--" if c["kind"] == "drain" else "-"
        xs, ys = [row[0] for row in series], [row[1] for row in series]
        lag.plot(xs, ys, style, label=_label(c))
    lag.set_xlabel("seconds since the load started")
    lag.set_ylabel("outbox entries not yet in PostgreSQL")
    lag.set_title("outbox lag (load, then drain)")
    lag.legend(fontsize=8)
    machine = doc["machine"]
    fig.suptitle(
        f"{machine['cores']} cores, load average {machine['load_average_at_start']} at the "
        f"start, {machine['load_average_at_end']} at the end",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label(config: dict[str, Any]) -> str:
    held = ", held" if config["kind"] == "drain" else ""
    return f"{config['apps']} app(s), {config['workers']} worker(s){held}"


def render_markdown(doc: dict[str, Any], plot: str) -> str:
    machine = doc["machine"]
    settings = doc["settings"]
    lines = [
        "# Scale benchmark",
        "",
        f"`{doc['command']}` at commit {doc['machine'].get('git_commit')}, finished "
        f"{doc['finished_at']}. The case_8842 graph in N "
        "application processes (DualSaver write_behind, in-process flusher off, "
        f"{settings['concurrency']} invokes in flight each, {settings['seconds']} s) against "
        f"one Redis Cluster of {doc['cluster']['masters']} masters (append-only file) and one "
        "PostgreSQL (fsync on), drained by M `dualsaver flush --follow` processes.",
        "",
        f"**Machine**: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"load average {machine['load_average_at_start']} at the start and "
        f"{machine['load_average_at_end']} at the end. Every process here (applications, "
        "workers, three Valkey masters, PostgreSQL) shares those cores with other work: the "
        "wall-clock rates are low and flatten early; the CPU-per-unit columns are what "
        "scales per core.",
        "",
        f"![steps/s and outbox lag]({plot})",
        "",
        "| apps | workers | steps/s | app CPU ms/step | outbox entries/s | "
        "outbox max (s of writes) | at load end | drain/s after (per worker) | "
        "worker CPU ms/entry | Valkey CPU ms/ckpt | PG CPU ms/ckpt |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in doc["configs"]:
        if c["kind"] != "concurrent":
            continue
        drain = f"{_n(c['drain_per_s_after_load'])} ({_n(c['drain_per_s_per_worker_after_load'])})"
        lines.append(
            f"| {c['apps']} | {c['workers']} | {_n(c['steps_per_s'])} | "
            f"{_n(c['app_cpu_ms_per_step'], 3)} | {_n(c['entries_per_s'])} | "
            f"{_n(c['outbox_max'])} ({_n(c['outbox_max_seconds_of_writes'], 2)}) | "
            f"{_n(c['outbox_at_load_end'])} | {drain} | {_n(c['worker_cpu_ms_per_entry'], 3)} | "
            f"{_n(c['redis_cpu_ms_per_checkpoint'], 3)} | "
            f"{_n(c['postgres_cpu_ms_per_checkpoint'], 3)} |"
        )
    lines += [
        "",
        "Drain/s after the load: entries left when the applications stopped, divided by the "
        "seconds the workers took to empty the outbox (a small backlog makes it a rough "
        "figure; the drain measurement below is the one to use).",
        "",
        "## Drain capacity",
        "",
        f"{settings['drain_apps']} application processes fill the outbox for "
        f"{settings['seconds']} s while the workers are paused (SIGSTOP, after they "
        "connected); then the workers are continued and the outbox is timed to empty.",
        "",
        "| apps | workers | backlog (entries) | drained in s | entries/s | per worker | "
        "worker CPU ms/entry | outbox B/entry |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in doc["configs"]:
        if c["kind"] != "drain":
            continue
        lines.append(
            f"| {c['apps']} | {c['workers']} | {_n(c['outbox_at_load_end'])} | "
            f"{_n(c['drain_seconds_after_load'], 2)} | {_n(c['drain_per_s_after_load'])} | "
            f"{_n(c['drain_per_s_per_worker_after_load'])} | "
            f"{_n(c['worker_cpu_ms_per_entry'], 3)} | "
            f"{_n(c['outbox_stream_bytes_per_entry'], 0)} |"
        )
    lines += [
        "",
        "## Bytes per checkpoint",
        "",
        "| configuration | checkpoints | outbox entries/step | Redis B/ckpt | "
        "outbox B/entry | PG B/ckpt | PG WAL B/ckpt |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in doc["configs"]:
        lines.append(
            f"| {_label(c)} | {_n(c['checkpoints'])} | "
            f"{_n(c['entries_per_step'], 3)} | {_n(c['redis_bytes_per_checkpoint'], 0)} | "
            f"{_n(c['outbox_stream_bytes_per_entry'], 0)} | "
            f"{_n(c['postgres_bytes_per_checkpoint'], 0)} | "
            f"{_n(c['postgres_wal_bytes_per_checkpoint'], 0)} |"
        )
    basis = max(doc["configs"], key=lambda c: c["checkpoints"])
    payload = basis["storage"]["compression"]["payload"]
    files = basis["storage"]["compression"]["relation_files"]
    lines += [
        "",
        "Redis: `MEMORY USAGE` of every thread key of the configuration's prefix (outbox "
        "excluded, it is empty once drained). PostgreSQL: `pg_total_relation_size` of "
        "checkpoints, blobs and writes; WAL from `pg_current_wal_lsn` before and after.",
        "",
        f"**Compression** ({payload['method']}). The applications store values "
        "uncompressed (`compression=None`); on the largest configuration's data: the "
        f"stored values each compressed alone, {_n(payload['raw_bytes'])} B to "
        f"{_n(payload['compressed_bytes'])} B (ratio {payload['ratio']}); with the saver's "
        "default instead (channel values and writes of 1 KiB or more only), "
        f"{_n(payload.get('default_bytes'))} B (ratio {payload.get('default_ratio')}); the "
        f"tables' files compressed in 128 KiB blocks, {_n(files['raw_bytes'])} B to "
        f"{_n(files['compressed_bytes'])} B (ratio {files['ratio']}: optimistic, every "
        "case here is the same customer, so rows repeat each other).",
        "",
        "## The plan's figures",
        "",
        f"For 1 billion checkpoints a day; basis for bytes: {doc['plan']['basis']}.",
        "",
        "| figure | value | from | how |",
        "|---|---|---|---|",
    ]
    for name, fig in doc["plan"]["figures"].items():
        lines.append(
            f"| `{name}` | {_n(fig['value'], 1)} {fig['unit']} | {fig['source']} | {fig['how']} |"
        )
    assumptions = ", ".join(f"{k} = {v}" for k, v in doc["plan"]["assumptions"].items())
    lines += ["", f"Assumptions (choices, not measurements): {assumptions}.", ""]
    return "\n".join(lines)
