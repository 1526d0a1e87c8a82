"""The PostgreSQL tier's history work: DeltaChannel ancestor walks, prune, blob GC.

A ``DeltaChannel`` stores only its writes between snapshots; its value at a
checkpoint is the nearest ancestor's stored value (the seed, usually a
``_DeltaSnapshot``) plus the writes on the path from there. Both the history read and
``prune(strategy="keep_latest")`` walk that parent chain in SQL (a recursive CTE, see
``durable.sql._CHAIN``), not one ``get_tuple`` per ancestor.

Functions here take an open ``asyncpg`` connection; the saver owns connections,
transactions and error mapping.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg
from langgraph.checkpoint.base import DeltaChannelHistory, PendingWrite, writes_sort_key
from langgraph.checkpoint.serde.base import SerializerProtocol

from langgraph_dualsaver.durable import sql as sql

__all__ = ["delete_threads", "gc_blobs", "history", "keep_latest"]


async def history(
    conn: asyncpg.Connection,
    serde: SerializerProtocol,
    thread_id: str,
    checkpoint_ns: str,
    checkpoint_id: str | None,
    channels: Sequence[str],
) -> dict[str, DeltaChannelHistory]:
    """``get_delta_channel_history`` for one checkpoint (the latest when no id), in one
    query.

    Same contract as ``InMemorySaver``'s: per channel, the writes on the path from the
    target's parent back to the nearest ancestor with a stored value, oldest first and
    in ``writes_sort_key`` order within a checkpoint, and that value as ``seed``.
    """
    query = sql.DELTA_HISTORY_BY_ID if checkpoint_id else sql.DELTA_HISTORY_LATEST
    rows = await conn.fetch(query, thread_id, checkpoint_ns, checkpoint_id, list(channels), False)
    writes: dict[str, list[tuple[int, tuple[str, str, int], PendingWrite]]] = {
        ch: [] for ch in channels
    }
    seeds: dict[str, Any] = {}
    for row in rows:
        channel = row["channel"]
        if row["kind"] == "b":
            seeds[channel] = serde.loads_typed((row["type"], row["blob"]))
            continue
        value = serde.loads_typed((row["type"], row["blob"]))
        order = writes_sort_key(row["task_path"], row["task_id"], row["idx"])
        writes[channel].append((row["depth"], order, (row["task_id"], channel, value)))
    result: dict[str, DeltaChannelHistory] = {}
    for channel in channels:
        # Oldest ancestor (deepest) first; within a checkpoint, writes_sort_key order.
        ordered = sorted(writes[channel], key=lambda w: (-w[0], w[1]))
        entry: DeltaChannelHistory = {"writes": [w[2] for w in ordered]}
        if channel in seeds:
            entry["seed"] = seeds[channel]
        result[channel] = entry
    return result


async def keep_latest(conn: asyncpg.Connection, thread_id: str) -> None:
    """Prune one thread to its latest checkpoint per namespace, keeping what that
    checkpoint's DeltaChannels need: every ancestor back to the nearest one whose blob
    holds a value, with its writes. Call inside a transaction holding the thread's lock.
    """
    heads = await conn.fetch(sql.PRUNE_HEADS, thread_id)
    for head in heads:
        ns, head_id = head["checkpoint_ns"], head["checkpoint_id"]
        kept = [head_id]
        delta_channels = _delta_channels(head["counters"])
        if delta_channels:
            chain = await conn.fetch(
                sql.DELTA_KEEP_CHAIN, thread_id, ns, head_id, delta_channels, True
            )
            kept = [row["checkpoint_id"] for row in chain] or kept
        deleted = await conn.fetch(sql.PRUNE_CHECKPOINTS, thread_id, ns, kept)
        if not deleted:
            continue
        await conn.execute(sql.PRUNE_WRITES, thread_id, ns, [r["checkpoint_id"] for r in deleted])
        await conn.execute(sql.PRUNE_PARENTS, thread_id, ns, kept)
        await gc_blobs(conn, thread_id, ns, (r["channel_versions"] for r in deleted))


async def delete_threads(conn: asyncpg.Connection, thread_ids: Sequence[str]) -> None:
    """Every row of the threads: checkpoints, blobs and writes. One statement per
    thread, pipelined in one round trip, so each names one partition."""
    await conn.executemany(sql.DELETE_THREAD, [(thread_id,) for thread_id in thread_ids])


async def gc_blobs(
    conn: asyncpg.Connection,
    thread_id: str,
    checkpoint_ns: str,
    freed_versions: Iterable[str | Mapping[str, str]],
) -> None:
    """Delete the blobs that deleted checkpoints used and no remaining one does.

    ``freed_versions`` are the deleted checkpoints' ``channel_versions`` (JSON text or
    mappings).
    """
    freed: set[tuple[str, str]] = set()
    for stored in freed_versions:
        mapping = json.loads(stored) if isinstance(stored, str) else stored
        freed.update(mapping.items())
    if not freed:
        return
    channels, versions = zip(*sorted(freed), strict=True)
    await conn.execute(sql.GC_BLOBS, thread_id, checkpoint_ns, list(channels), list(versions))


def _delta_channels(counters: str | None) -> list[str]:
    """The DeltaChannels a checkpoint has unsnapshotted history for, from its
    ``counters_since_delta_snapshot`` metadata (JSON text from the query)."""
    if not counters:
        return []
    value = json.loads(counters)
    return sorted(value) if isinstance(value, dict) else []
