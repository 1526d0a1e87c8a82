"""What the scale benchmark reads from the stores and the processes it started.

The outbox (length and entries ever added, summed over its shard streams), the memory
Redis gives a prefix's keys (``MEMORY USAGE`` of every key, by kind), PostgreSQL's
tables (rows, ``pg_total_relation_size``, WAL written), how well the stored checkpoint
bytes compress, and the CPU seconds a process (or a process tree) has used.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import redis
from redis.cluster import RedisCluster

from langgraph_dualsaver.hot import keys as K

__all__ = [
    "TABLES",
    "compressor",
    "cpu_seconds",
    "outbox_counts",
    "pg_payload_compression",
    "pg_relation_files_compression",
    "pg_tables",
    "pg_wal_lsn",
    "redis_memory",
    "stream_memory",
]

TABLES = ("dualsaver_checkpoints", "dualsaver_blobs", "dualsaver_writes")
"""The tables that grow with every step (tombstones and settings do not)."""
BLOCK = 128 * 1024
"""Filesystem compression works on records of this size (ZFS's default recordsize)."""


# -- processes -----------------------------------------------------------------------


def cpu_seconds(pid: int, tree: bool = False) -> float:
    """User + system CPU seconds of ``pid``; with ``tree``, also of its live children
    and of the children it has reaped (PostgreSQL's backends come and go)."""
    try:
        process = psutil.Process(pid)
        times = process.cpu_times()
        total = times.user + times.system
        if tree:
            total += times.children_user + times.children_system
            for child in process.children(recursive=True):
                try:
                    child_times = child.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                total += child_times.user + child_times.system
    except psutil.NoSuchProcess:
        return 0.0
    return total


# -- Redis ----------------------------------------------------------------------------


def outbox_counts(client: RedisCluster, prefix: str, shards: int) -> tuple[int, int]:
    """``(entries queued now, entries ever added)`` over the prefix's outbox streams."""
    queued = added = 0
    for shard in range(shards):
        key = K.outbox_key(prefix, shard)
        try:
            info = client.xinfo_stream(key)
        except redis.ResponseError:  # no entry was ever added to this shard
            continue
        queued += int(info["length"])
        added += int(info.get("entries-added", info["length"]))
    return queued, added


def stream_memory(client: RedisCluster, prefix: str, shards: int) -> tuple[int, int]:
    """``(bytes, entries)`` of the prefix's outbox streams now."""
    total = entries = 0
    for shard in range(shards):
        key = K.outbox_key(prefix, shard)
        total += int(client.memory_usage(key, samples=0) or 0)
        entries += int(client.xlen(key))
    return total, entries


def _kind(key: str) -> str:
    for suffix in ("outbox", "dead", "meta", "cp", "idx", "blobs", "writes", "threads"):
        if key.endswith(":" + suffix):
            return suffix
    return "other"


def redis_memory(ports: Iterable[int], prefix: str) -> dict[str, Any]:
    """``MEMORY USAGE`` (exact: ``SAMPLES 0``) of every key of ``prefix`` on every
    master, summed by kind, with the key counts and each node's ``used_memory``."""
    by_kind: dict[str, int] = {}
    counts: dict[str, int] = {}
    used = []
    for port in ports:
        with redis.Redis(port=port, decode_responses=True) as node:
            used.append(int(node.info("memory")["used_memory"]))
            batch: list[str] = []
            for key in node.scan_iter(match=f"{prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    _add_usage(node, batch, by_kind, counts)
                    batch = []
            _add_usage(node, batch, by_kind, counts)
    return {
        "bytes_by_kind": by_kind,
        "keys_by_kind": counts,
        "bytes": sum(by_kind.values()),
        "used_memory_per_node": used,
    }


def _add_usage(
    node: redis.Redis, batch: list[str], by_kind: dict[str, int], counts: dict[str, int]
) -> None:
    if not batch:
        return
    pipe = node.pipeline(transaction=False)
    for key in batch:
        pipe.memory_usage(key, samples=0)
    for key, size in zip(batch, pipe.execute(), strict=True):
        kind = _kind(key)
        by_kind[kind] = by_kind.get(kind, 0) + int(size or 0)
        counts[kind] = counts.get(kind, 0) + 1


# -- PostgreSQL -----------------------------------------------------------------------


async def pg_wal_lsn(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SELECT pg_current_wal_lsn()::text"))


async def pg_wal_bytes(conn: asyncpg.Connection, since: str) -> int:
    query = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)"
    return int(await conn.fetchval(query, since))


async def pg_tables(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    """Rows and ``pg_total_relation_size`` (heap, TOAST and indexes) of each table."""
    found = {}
    for table in TABLES:
        rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
        size = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
        found[table] = {"rows": int(rows), "bytes": int(size)}
    return found


def compressor() -> tuple[str, Callable[[bytes], bytes]]:
    """zstd (level 3) if ``zstandard`` is installed, else zlib (level 6) from the stdlib."""
    try:
        import zstandard
    except ImportError:
        return "zlib level 6", lambda data: zlib.compress(data, 6)
    engine = zstandard.ZstdCompressor(level=3)
    return f"zstd level 3 (zstandard {zstandard.__version__})", engine.compress


PAYLOADS = {
    "dualsaver_checkpoints": "SELECT checkpoint, convert_to(metadata::text, 'UTF8'), "
    "convert_to(channel_versions::text, 'UTF8') FROM dualsaver_checkpoints",
    "dualsaver_blobs": "SELECT blob FROM dualsaver_blobs WHERE blob IS NOT NULL",
    "dualsaver_writes": "SELECT blob FROM dualsaver_writes",
}


DEFAULT_MIN_BYTES = 1024
"""The saver's default ``Compression.min_bytes``: smaller channel values and writes are
stored as they are."""


async def pg_payload_compression(conn: asyncpg.Connection) -> dict[str, Any]:
    """The stored values (checkpoint bytes, metadata, versions, blobs, writes) each
    compressed on its own, as a saver compressing what it stores would: raw and
    compressed bytes per table. ``default_bytes``: what the saver's default stores
    instead (blobs and writes of DEFAULT_MIN_BYTES or more compressed, if smaller so;
    the checkpoint rows as they are)."""
    method, compress = compressor()
    tables = {}
    for table, query in PAYLOADS.items():
        raw = packed = default = values = 0
        compressible = table != "dualsaver_checkpoints"
        for row in await conn.fetch(query):
            for value in row:
                data = bytes(value)
                small = len(compress(data))
                raw += len(data)
                packed += small
                big = compressible and len(data) >= DEFAULT_MIN_BYTES
                default += min(small, len(data)) if big else len(data)
                values += 1
        tables[table] = {
            "values": values,
            "raw_bytes": raw,
            "compressed_bytes": packed,
            "default_bytes": default,
        }
    raw = sum(t["raw_bytes"] for t in tables.values())
    packed = sum(t["compressed_bytes"] for t in tables.values())
    default = sum(t["default_bytes"] for t in tables.values())
    return {
        "method": method,
        "tables": tables,
        "raw_bytes": raw,
        "compressed_bytes": packed,
        "default_bytes": default,
        "ratio": round(packed / raw, 4) if raw else None,
        "default_ratio": round(default / raw, 4) if raw else None,
    }


RELATIONS = """
SELECT pg_relation_filepath(c.oid) FROM pg_class c
WHERE c.oid = ANY($1::regclass[])
   OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = ANY($1::regclass[]))
   OR c.oid IN (SELECT reltoastrelid FROM pg_class WHERE oid = ANY($1::regclass[]))
   OR c.oid IN (SELECT i.indexrelid FROM pg_index i JOIN pg_class t
                ON i.indrelid = t.reltoastrelid WHERE t.oid = ANY($1::regclass[]))
"""


async def pg_relation_files_compression(conn: asyncpg.Connection, pgdata: Path) -> dict[str, Any]:
    """The tables' files on disk (heap, TOAST, indexes: what ``pg_total_relation_size``
    counts, main fork), compressed in 128 KiB blocks as a compressing filesystem would."""
    method, compress = compressor()
    await conn.execute("CHECKPOINT")  # every page on disk, not only in shared buffers
    paths = [row[0] for row in await conn.fetch(RELATIONS, list(TABLES)) if row[0]]
    raw = packed = 0
    for relative in paths:
        base = pgdata / relative
        segments = [base, *sorted(base.parent.glob(base.name + ".[0-9]*"))]
        for segment in segments:
            if not segment.exists():
                continue
            with segment.open("rb") as handle:
                while block := handle.read(BLOCK):
                    raw += len(block)
                    packed += len(compress(block))
    return {
        "method": method,
        "block_bytes": BLOCK,
        "files": len(paths),
        "raw_bytes": raw,
        "compressed_bytes": packed,
        "ratio": round(packed / raw, 4) if raw else None,
    }
