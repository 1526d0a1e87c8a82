"""The hot tier's whole-thread operations: delete, evict, delete_for_runs, copy, prune,
the delta-channel walk, and the limits check of a backfill. ``RedisHotSaver`` delegates
to these functions; they use its connection, script and error plumbing.

``delete_for_runs`` reads every registered thread, and ``prune``/``copy_thread`` read
whole threads: administrative calls, not request-path ones.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import DeltaChannelHistory, PendingWrite

from langgraph_dualsaver.chain.outbox import position, position_ms
from langgraph_dualsaver.errors import (
    CheckpointTooLargeError,
    StoreUnavailableError,
)
from langgraph_dualsaver.hot.keys import (
    StoredCheckpoint,
    chunks,
    copied_records,
    cp_field,
    decode_blob,
    decode_stored_checkpoint,
    decode_write_members,
    ns_prefix,
    pairs,
    split_cp_field,
    text,
    utf8,
)
from langgraph_dualsaver.hot.listing import registered_threads
from langgraph_dualsaver.hot.scripts import CHAIN, DELETE, DUMP, EVICT, REMOVE
from langgraph_dualsaver.records import (
    CheckpointRecord,
    Limits,
    WritesRecord,
    checkpoint_ids,
    decode_metadata,
    prune_arguments,
    resolve_writes,
    run_ids_argument,
    validate_id,
)

if TYPE_CHECKING:
    from langgraph_dualsaver.hot.saver import RedisHotSaver

__all__ = [
    "check_limits",
    "copy_thread",
    "delete_for_runs",
    "delete_threads",
    "delta_channel_history",
    "evict_threads",
    "prune",
]

_THREADS = 100
"""Threads per pipeline."""
_CHAIN_STEPS = 256
"""Ancestors walked per script call by the delta-channel walk (bounds script time)."""
_COPY_BATCH = 64
"""Records written per script call by copy_thread."""
_DELETE_ROUNDS = 10
"""Attempts to place tombstones past each stream's last id (each retry moves later)."""


async def delete_threads(
    saver: RedisHotSaver, thread_ids: Sequence[str], *, tombstone: bool
) -> list[str | None]:
    """Delete threads and their registry entries; with ``tombstone``, queue one outbox
    tombstone each, in the same script, at an entry id chosen here and signed with the
    saver's ``outbox_key`` (so a copy added later does not authenticate). Returns the
    tombstones' entry ids."""
    done: dict[str, str | None] = {}
    floor: dict[str, int] = {}  # per outbox stream: the lowest millisecond to try
    todo = list(dict.fromkeys(thread_ids))
    for _ in range(_DELETE_ROUNDS):
        if not todo:
            break
        retry: list[str] = []
        for chunk in chunks(todo, _THREADS):
            planned = _tombstone_ids(saver, chunk, floor) if tombstone else {}

            def build(
                pipe: Any, chunk: list[str] = chunk, planned: dict[str, str] = planned
            ) -> None:
                for thread_id in chunk:
                    entry_id = planned.get(thread_id, "")
                    tag = _tombstone_tag(saver, entry_id, thread_id) if tombstone else b""
                    args = [utf8(thread_id), int(tombstone), entry_id, tag]
                    DELETE.queue(pipe, saver.thread_keys(thread_id).all, args)

            replies = await saver.conn.pipeline(build)
            for thread_id, reply in zip(chunk, replies, strict=True):
                if isinstance(reply, list):  # ['retry', last id]: sign a later one
                    stream = saver.thread_keys(thread_id).outbox
                    floor[stream] = max(floor.get(stream, 0), position_ms(position(reply[1]))) + 1
                    retry.append(thread_id)
                else:
                    done[thread_id] = text(reply) if reply else None
        todo = retry
    if todo:
        raise StoreUnavailableError(f"could not queue tombstones for {len(todo)} threads")
    return [done[thread_id] for thread_id in thread_ids]


def _tombstone_ids(
    saver: RedisHotSaver, threads: Sequence[str], floor: Mapping[str, int]
) -> dict[str, str]:
    """Entry ids for the threads' tombstones: this millisecond (or a later one, after a
    retry), numbered per stream so several in one stream stay in order."""
    now_ms = int(time.time() * 1000)
    counters: dict[str, int] = {}
    planned = {}
    for thread_id in threads:
        stream = saver.thread_keys(thread_id).outbox
        seq = counters[stream] = counters.get(stream, -1) + 1
        planned[thread_id] = f"{max(now_ms, floor.get(stream, 0))}-{seq}"
    return planned


def _tombstone_tag(saver: RedisHotSaver, entry_id: str, thread_id: str) -> bytes:
    key = saver.outbox_key
    return key.tombstone_tag(entry_id, thread_id) if key is not None else b""


async def evict_threads(saver: RedisHotSaver, thread_ids: Sequence[str]) -> None:
    """Drop threads' hot copies, without tombstones. A thread with records still
    queued for PostgreSQL is kept (and stays registered)."""
    for chunk in chunks(thread_ids, _THREADS):

        def build(pipe: Any, chunk: list[str] = chunk) -> None:
            for thread_id in chunk:
                keys = saver.thread_keys(thread_id).data
                EVICT.queue(pipe, keys, [utf8(thread_id)])

        dropped = await saver.conn.pipeline(build)
        gone = [t for t, n in zip(chunk, dropped, strict=True) if n]

        def unregister(pipe: Any, gone: list[str] = gone) -> None:
            for thread_id in gone:
                pipe.zrem(saver.thread_keys(thread_id).registry, utf8(thread_id))

        if gone:
            await saver.conn.pipeline(unregister)


async def delete_for_runs(saver: RedisHotSaver, run_ids: Sequence[str]) -> None:
    """Delete every checkpoint whose metadata ``run_id`` is one of ``run_ids``, with its
    writes and the blobs no other checkpoint references."""
    runs = set(run_ids_argument(run_ids))
    if not runs:
        return
    for chunk in chunks(await registered_threads(saver), _THREADS):
        doomed: dict[str, list[bytes]] = {}
        for tid, entries in zip(chunk, await _stored_of(saver, chunk), strict=True):
            fields = [
                f for f, e in entries.items() if decode_metadata(e.metadata).get("run_id") in runs
            ]
            if fields:
                doomed[tid] = fields
        await _remove(saver, doomed)


async def copy_thread(saver: RedisHotSaver, source: str, target: str) -> None:
    """Copy every checkpoint, blob and pending write of ``source`` into ``target``
    (merging). With ``outbox``, the copies are queued like any write."""
    validate_id("thread_id", source, saver.limits)
    validate_id("thread_id", target, saver.limits)
    tk = saver.thread_keys(source)
    reply = await saver.conn.eval(DUMP, tk.data, [utf8(source)])
    if not saver.found_whole(source, reply):
        return
    _, checkpoints, blobs, members = reply
    records = copied_records(target, pairs(checkpoints), pairs(blobs), members)
    for batch in chunks(records, _COPY_BATCH):
        await saver.astore_records(target, batch, enqueue=saver.outbox)


def check_limits(records: Iterable[CheckpointRecord | WritesRecord], limits: Limits) -> None:
    """Raise ``InvalidIdError`` or ``CheckpointTooLargeError`` if a record read elsewhere
    (PostgreSQL, perhaps written under larger limits) holds an id or a value that
    ``limits`` would refuse on input."""
    for record in records:
        validate_id("thread_id", record.thread_id, limits)
        validate_id("checkpoint_ns", record.checkpoint_ns, limits, allow_empty=True)
        validate_id("checkpoint_id", record.checkpoint_id, limits)
        if isinstance(record, CheckpointRecord):
            _check_checkpoint(record, limits)
        else:
            for write in record.writes:
                validate_id("task_id", write.task_id, limits, allow_empty=True)
                validate_id("channel", write.channel, limits)
                _check_size(f"write to {write.channel!r}", write.data, limits)


def _check_checkpoint(record: CheckpointRecord, limits: Limits) -> None:
    if record.parent_checkpoint_id is not None:
        validate_id("parent checkpoint_id", record.parent_checkpoint_id, limits)
    _check_size("metadata", record.metadata, limits)
    for blob in record.blobs:
        validate_id("channel", blob.channel, limits)
        validate_id("version", blob.version, limits)
        _check_size(f"channel {blob.channel!r}", blob.data, limits)


def _check_size(what: str, data: bytes | None, limits: Limits) -> None:
    if data is not None and len(data) > limits.max_value_bytes:
        raise CheckpointTooLargeError(
            f"{what} is {len(data)} bytes; the limit is {limits.max_value_bytes} "
            "(Limits.max_value_bytes)"
        )


async def prune(saver: RedisHotSaver, thread_ids: Sequence[str], strategy: str) -> None:
    """``"delete"``: delete the threads, as ``adelete_thread`` does. ``"keep_latest"``:
    keep each namespace's latest checkpoint with its writes and blobs and, for a thread
    using ``DeltaChannel``, the ancestors back to each delta channel's nearest
    snapshot (what ``get_delta_channel_history`` needs); delete the rest."""
    threads = prune_arguments(thread_ids, strategy, saver.limits)
    if not threads:
        return
    if strategy == "delete":
        await delete_threads(saver, threads, tombstone=saver.outbox)
        return
    for chunk in chunks(threads, _THREADS):
        doomed: dict[str, list[bytes]] = {}
        for tid, entries in zip(chunk, await _stored_of(saver, chunk), strict=True):
            keep = await _kept(saver, tid, entries)
            fields = [f for f in entries if f not in keep]
            if fields:
                doomed[tid] = fields
        await _remove(saver, doomed)


async def _kept(
    saver: RedisHotSaver,
    thread_id: str,
    entries: Mapping[bytes, StoredCheckpoint],
) -> set[bytes]:
    heads: dict[str, str] = {}
    for field in entries:
        ns, checkpoint_id = split_cp_field(field)
        if checkpoint_id > heads.get(ns, ""):
            heads[ns] = checkpoint_id
    keep: set[bytes] = set()
    for ns, head in heads.items():
        field = cp_field(ns, head)
        keep.add(field)
        metadata = decode_metadata(entries[field].metadata)
        delta = metadata.get("counters_since_delta_snapshot")
        if isinstance(delta, dict) and delta:
            async for step_id, _, _ in _chain(saver, thread_id, ns, head, delta):
                keep.add(cp_field(ns, step_id))
    return keep


async def _stored_of(
    saver: RedisHotSaver, threads: Sequence[str]
) -> list[dict[bytes, StoredCheckpoint]]:
    replies = await saver.conn.pipeline(
        lambda p: [p.hgetall(saver.thread_keys(t).cp) for t in threads]
    )
    return [{f: decode_stored_checkpoint(v) for f, v in r.items()} for r in replies]


async def _remove(saver: RedisHotSaver, doomed: Mapping[str, list[bytes]]) -> None:
    if not doomed:
        return

    def build(pipe: Any) -> None:
        for tid, fields in doomed.items():
            REMOVE.queue(pipe, saver.thread_keys(tid).data, [utf8(tid), *fields])

    await saver.conn.pipeline(build)


async def delta_channel_history(
    saver: RedisHotSaver, config: RunnableConfig, channels: Sequence[str]
) -> Mapping[str, DeltaChannelHistory]:
    """What ``get_delta_channel_history`` returns, walking the parent chain in Lua,
    ``_CHAIN_STEPS`` ancestors per call (one call for most threads). Same result as
    ``InMemorySaver``'s walk: per channel the on-path writes oldest to newest, and the
    nearest ancestor's non-empty blob as ``seed``."""
    if not channels:
        return {}
    thread_id, ns, checkpoint_id = checkpoint_ids(config, saver.limits)
    collected: dict[str, list[PendingWrite]] = {c: [] for c in channels}
    seeds: dict[str, Any] = {}
    remaining = set(channels)
    async for step_id, members, found in _chain(saver, thread_id, ns, checkpoint_id, channels):
        step_writes = decode_write_members(cp_field(ns, step_id), members)
        for write in reversed(resolve_writes(step_writes)):
            if write.channel in remaining:
                value = saver.serde.loads_typed((write.type, write.data))
                collected[write.channel].append((write.task_id, write.channel, value))
        for channel, blob in found.items():
            type_, data = decode_blob(blob)
            assert data is not None, "the script skips empty blobs"
            seeds[channel] = saver.serde.loads_typed((type_, data))
            remaining.discard(channel)
    result: dict[str, DeltaChannelHistory] = {}
    for channel in channels:
        entry: DeltaChannelHistory = {"writes": list(reversed(collected[channel]))}
        if channel in seeds:
            entry["seed"] = seeds[channel]
        result[channel] = entry
    return result


async def _chain(
    saver: RedisHotSaver,
    thread_id: str,
    ns: str,
    checkpoint_id: str | None,
    channels: Iterable[str],
) -> AsyncIterator[tuple[str, list[bytes], dict[str, bytes]]]:
    """``(checkpoint_id, writes' members, {channel: seed blob})`` per ancestor, from the
    target's parent up to where every channel has found its seed."""
    remaining = list(dict.fromkeys(channels))
    tk = saver.thread_keys(thread_id)
    mode, start = (b"target", checkpoint_id) if checkpoint_id else (b"latest", "")
    while True:
        args = [utf8(thread_id), ns_prefix(ns), _CHAIN_STEPS, mode, utf8(start)]
        reply = await saver.conn.eval(CHAIN, tk.data, [*args, *map(utf8, remaining)])
        if not saver.found_whole(thread_id, reply):
            return
        _, steps, next_id = reply
        for step_id, members, flat in steps:
            found = {k.decode("utf-8", "surrogatepass"): v for k, v in pairs(flat).items()}
            yield step_id.decode("utf-8", "surrogatepass"), members, found
            remaining = [c for c in remaining if c not in found]
        if not next_id or not remaining:
            return
        mode, start = b"ancestor", next_id.decode("utf-8", "surrogatepass")
