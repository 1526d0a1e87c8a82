"""A capacity plan for 1 billion checkpoints a day, from the scale benchmark's JSON.

Pure arithmetic: every figure is a measured quantity times the target rate (or a stated
assumption), and says which field of ``scale.json`` it comes from. CPU figures are in
cores (CPU seconds per second): they come from CPU time per step, per entry or per
checkpoint measured on the benchmark machine, so they scale per core, not with that
machine's wall-clock rates (it has 2 cores shared with other work).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from langgraph_dualsaver.durable.layout import MAX_PARTITIONS

__all__ = ["ASSUMPTIONS", "CHECKPOINTS_PER_DAY", "PEAK_FACTOR", "derive_plan"]

CHECKPOINTS_PER_DAY = 1_000_000_000
PEAK_FACTOR = 3
GIB = 2**30
ASSUMPTIONS = {
    "ttl_hours": 24,
    "redis_data_gib_per_master": 25,
    "redis_main_thread_utilisation": 0.5,
    "worker_core_utilisation": 0.7,
    "backlog_minutes_at_peak": 10,
    "retention_days": 30,
    "partition_target_gib": 100,
    "postgres_node_disk_tib": 16,
}
"""Choices, not measurements: each figure that uses one says so. 25 GiB of data per
master leaves a 32 GiB node room for the fork of an AOF rewrite and fragmentation;
Redis runs commands on one thread, kept at half its core for bursts and failovers."""


def _median(configs: list[dict[str, Any]], field: str) -> tuple[float, str]:
    values = [c[field] for c in configs if c.get(field) is not None]
    if not values:
        raise ValueError(f"no configuration measured {field}")
    return statistics.median(values), f"scale.json configs[*].{field} (median of {len(values)})"


def _label(config: dict[str, Any]) -> str:
    return f"{config['apps']} app(s) / {config['workers']} worker(s)"


def derive_plan(doc: dict[str, Any]) -> dict[str, Any]:
    """The plan's figures, each ``{value, unit, source, how}``, keyed by name."""
    configs = doc["configs"]
    if not configs:
        raise ValueError("scale.json has no configurations to plan from")
    figures: dict[str, dict[str, Any]] = {}

    def put(name: str, value: float, unit: str, source: str, how: str) -> float:
        figures[name] = {"value": value, "unit": unit, "source": source, "how": how}
        return value

    avg = put(
        "checkpoints_per_s", CHECKPOINTS_PER_DAY / 86_400, "checkpoints/s",
        "target", "1e9 checkpoints / 86,400 s",
    )  # fmt: skip
    peak = put(
        "checkpoints_per_s_peak", avg * PEAK_FACTOR, "checkpoints/s",
        "target", f"{PEAK_FACTOR}x the average",
    )  # fmt: skip
    basis = max(configs, key=lambda c: c["checkpoints"])
    where = f"scale.json configs[{configs.index(basis)}] ({_label(basis)}, "
    where += f"{basis['checkpoints']:,} checkpoints)"

    # -- Redis: memory at the TTL, then CPU ------------------------------------------
    per_ckpt = basis["redis_bytes_per_checkpoint"]
    hot_gib = put(
        "redis_memory_gib_24h", CHECKPOINTS_PER_DAY * per_ckpt / GIB, "GiB",
        f"{where}.redis_bytes_per_checkpoint = {per_ckpt:,.0f} B",
        "a thread's keys expire 24 h after its last write, so Redis holds about one day of "
        "checkpoints: 1e9 x bytes per checkpoint (MEMORY USAGE of every thread key)",
    )  # fmt: skip
    put(
        "redis_memory_gib_1h", CHECKPOINTS_PER_DAY / 24 * per_ckpt / GIB, "GiB",
        f"{where}.redis_bytes_per_checkpoint",
        "for contrast, the same at a 1 h TTL: one hour of checkpoints",
    )  # fmt: skip
    entries_per_step, src_entries = _median(configs, "entries_per_step")
    peak_entries = put(
        "outbox_entries_per_s_peak", peak * entries_per_step, "entries/s",
        src_entries, "peak checkpoints/s x outbox entries per step",
    )  # fmt: skip
    stream_configs = [
        c for c in configs if c.get("kind") == "drain" and c.get("outbox_stream_bytes_per_entry")
    ]
    if stream_configs:
        per_entry, src_stream = _median(stream_configs, "outbox_stream_bytes_per_entry")
        minutes = ASSUMPTIONS["backlog_minutes_at_peak"]
        put(
            "redis_backlog_gib", peak_entries * 60 * minutes * per_entry / GIB, "GiB",
            src_stream,
            f"outbox memory if PostgreSQL stops for {minutes} min at peak "
            "(assumption: backlog_minutes_at_peak)",
        )  # fmt: skip
    by_memory = math.ceil(hot_gib / ASSUMPTIONS["redis_data_gib_per_master"])
    put(
        "redis_masters_for_memory", by_memory, "masters", "redis_memory_gib_24h",
        "memory / 25 GiB of data per master (assumption: redis_data_gib_per_master)",
    )  # fmt: skip
    redis_ms, src_redis = _median(configs, "redis_cpu_ms_per_checkpoint")
    redis_cores = put(
        "redis_cores_peak", peak * redis_ms / 1000, "cores", src_redis,
        "peak checkpoints/s x Valkey CPU per checkpoint (three masters, load and drain, "
        "idle CPU subtracted)",
    )  # fmt: skip
    by_cpu = math.ceil(redis_cores / ASSUMPTIONS["redis_main_thread_utilisation"])
    put(
        "redis_masters_for_cpu", by_cpu, "masters", "redis_cores_peak",
        "cores / 0.5 per master (assumption: redis_main_thread_utilisation)",
    )  # fmt: skip
    masters = put(
        "redis_masters", max(by_memory, by_cpu, 3), "masters",
        "redis_masters_for_memory, redis_masters_for_cpu",
        "the larger of the two, at least 3; each with one replica (write_behind WAITs for it)",
    )  # fmt: skip
    put("redis_nodes", 2 * masters, "nodes", "redis_masters", "masters + one replica each")

    # -- flush workers -------------------------------------------------------------------
    drains = [c for c in configs if c.get("kind") == "drain"]
    worker_ms, src_worker = _median(drains or configs, "worker_cpu_ms_per_entry")
    src_worker = src_worker.replace("configs[*]", "configs[kind=drain]" if drains else "configs[*]")
    worker_cores = put(
        "flush_worker_cores_peak", peak_entries * worker_ms / 1000, "cores", src_worker,
        "peak outbox entries/s x worker CPU per entry, from the drain runs (busy workers: "
        "an idle worker's polling is not in it)",
    )  # fmt: skip
    put(
        "flush_workers", math.ceil(worker_cores / ASSUMPTIONS["worker_core_utilisation"]),
        "processes", "flush_worker_cores_peak",
        "one worker is one Python process (one core at most), kept at 0.7 of it "
        "(assumption: worker_core_utilisation)",
    )  # fmt: skip
    if drains:
        best = max(drains, key=lambda c: c["drain_per_s_per_worker_after_load"])
        rate = best["drain_per_s_per_worker_after_load"]
        put(
            "flush_workers_at_measured_wall_rate", math.ceil(peak_entries / rate), "processes",
            f"scale.json configs[{configs.index(best)}] ({_label(best)})"
            f".drain_per_s_per_worker_after_load = {rate:,.0f} entries/s",
            "peak entries/s / the best drain rate per worker measured here (2 shared cores, "
            "the servers on them too): a pessimistic bound",
        )  # fmt: skip
    app_ms, src_app = _median(configs, "app_cpu_ms_per_step")
    put(
        "application_cores_peak", peak * app_ms / 1000, "cores", src_app,
        "peak steps/s x application CPU per step (graph + DualSaver, case_8842 graph)",
    )  # fmt: skip

    # -- PostgreSQL --------------------------------------------------------------------
    pg_ms, src_pg = _median(configs, "postgres_cpu_ms_per_checkpoint")
    put(
        "postgres_cores_peak", peak * pg_ms / 1000, "cores", src_pg,
        "peak checkpoints/s x PostgreSQL CPU per checkpoint (postmaster and backends, idle "
        "CPU subtracted)",
    )  # fmt: skip
    tables = basis["storage"]["postgres"]["tables"]
    checkpoints = basis["checkpoints"]
    for table, row in tables.items():
        put(
            f"{table}_rows_per_day", CHECKPOINTS_PER_DAY * row["rows"] / checkpoints, "rows",
            f"{where}.storage.postgres.tables.{table}.rows = {row['rows']:,}",
            "1e9 x rows per checkpoint",
        )  # fmt: skip
    disk_per = basis["postgres_bytes_per_checkpoint"]
    disk = put(
        "postgres_disk_gib_per_day", CHECKPOINTS_PER_DAY * disk_per / GIB, "GiB/day",
        f"{where}.postgres_bytes_per_checkpoint = {disk_per:,.0f} B",
        "1e9 x pg_total_relation_size (heap, TOAST, indexes) per checkpoint",
    )  # fmt: skip
    wal_per = basis["postgres_wal_bytes_per_checkpoint"]
    wal = put(
        "postgres_wal_gib_per_day", CHECKPOINTS_PER_DAY * wal_per / GIB, "GiB/day",
        f"{where}.postgres_wal_bytes_per_checkpoint = {wal_per:,.0f} B",
        "1e9 x WAL bytes per checkpoint: what PostgreSQL writes (and ships to replicas)",
    )  # fmt: skip
    put(
        "postgres_wal_mib_per_s_peak", peak * wal_per / 2**20, "MiB/s",
        "postgres_wal_bytes_per_checkpoint", "peak checkpoints/s x WAL bytes per checkpoint",
    )  # fmt: skip
    payload = basis["storage"]["compression"]["payload"]
    saved = (payload["raw_bytes"] - payload["compressed_bytes"]) / checkpoints
    payload_src = f"{where}.storage.compression.payload (ratio {payload['ratio']}, "
    payload_src += f"{payload['method']}: {saved:,.0f} B saved per checkpoint)"
    disk_value = put(
        "postgres_disk_gib_per_day_value_compression",
        disk - CHECKPOINTS_PER_DAY * saved / GIB, "GiB/day", payload_src,
        "disk per day minus what compressing each stored value saves (rows, indexes unchanged)",
    )  # fmt: skip
    if "default_bytes" in payload:
        default_saved = (payload["raw_bytes"] - payload["default_bytes"]) / checkpoints
        put(
            "postgres_disk_gib_per_day_default_compression",
            disk - CHECKPOINTS_PER_DAY * default_saved / GIB, "GiB/day",
            f"{where}.storage.compression.payload.default_ratio = {payload['default_ratio']}",
            "what the saver's default (zstd for channel values and writes of 1 KiB or more) "
            "would save on this workload",
        )  # fmt: skip
    put(
        "postgres_wal_gib_per_day_value_compression",
        wal - CHECKPOINTS_PER_DAY * saved / GIB, "GiB/day", payload_src,
        "WAL per day minus the same saving (the WAL carries each new row's values once)",
    )  # fmt: skip
    put(
        "redis_memory_gib_24h_value_compression",
        hot_gib - CHECKPOINTS_PER_DAY * saved / GIB, "GiB", payload_src,
        "an estimate: Redis holds the same checkpoint, blob and write values, so the same "
        "saving per checkpoint",
    )  # fmt: skip
    files = basis["storage"]["compression"]["relation_files"]
    disk_fs = put(
        "postgres_disk_gib_per_day_filesystem_compression",
        disk * files["ratio"], "GiB/day",
        f"{where}.storage.compression.relation_files.ratio = {files['ratio']} "
        f"({files['method']}, 128 KiB blocks)",
        "disk per day x the ratio of the tables' own files compressed in 128 KiB blocks "
        "(optimistic: every benchmark case is the same customer, so rows repeat each other)",
    )  # fmt: skip
    retention = ASSUMPTIONS["retention_days"]
    node_tib = ASSUMPTIONS["postgres_node_disk_tib"]
    target = ASSUMPTIONS["partition_target_gib"]
    variants = (
        ("", disk, "postgres_disk_gib_per_day"),
        ("_value_compression", disk_value, "postgres_disk_gib_per_day_value_compression"),
        ("_filesystem_compression", disk_fs, "postgres_disk_gib_per_day_filesystem_compression"),
    )
    for suffix, per_day, src in variants:
        kept = put(
            f"postgres_disk_tib_retained{suffix}", per_day * retention / 1024, "TiB", src,
            f"{retention} days of history (assumption: retention_days)",
        )  # fmt: skip
        put(
            f"postgres_nodes_for_disk{suffix}", math.ceil(kept / node_tib), "nodes",
            f"postgres_disk_tib_retained{suffix}",
            f"retained disk / {node_tib} TiB per node (assumption: postgres_node_disk_tib)",
        )  # fmt: skip
        needed = math.ceil(kept * 1024 / target)
        wanted = 2 ** math.ceil(math.log2(max(needed, 1)))
        capped = f"; partitions= allows at most {MAX_PARTITIONS} per database" * (
            wanted > MAX_PARTITIONS
        )
        put(
            f"postgres_partitions{suffix}", wanted, "partitions",
            f"postgres_disk_tib_retained{suffix}",
            f"retained disk / {target} GiB per partition (assumption: partition_target_gib) "
            f"= {needed}, up to a power of two{capped}",
        )  # fmt: skip
    return {"assumptions": ASSUMPTIONS, "basis": where, "figures": figures}
