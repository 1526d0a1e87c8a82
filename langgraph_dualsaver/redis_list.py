"""Listing checkpoints from the hot tier, and the thread registry behind ``list(None)``.

One namespace of one thread pages straight from its index (newest first, ``before``
as the range's upper bound). Otherwise the candidates are gathered from the indexes of
the thread (or of every registered thread) and sorted by checkpoint id. Candidates
load ``BATCH`` at a time, one LOAD script per thread in one pipeline; with a
``filter``, their metadata is read first so only matching checkpoints load values.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple

from langgraph_dualsaver import keys as K
from langgraph_dualsaver import redis_scripts as S
from langgraph_dualsaver.records import validate_id

if TYPE_CHECKING:
    from langgraph_dualsaver.redis import Client, RedisHotSaver

__all__ = ["BATCH", "list_checkpoints", "registered_threads"]

BATCH = 100
"""Checkpoints loaded per round trip; threads per pipeline."""


async def list_checkpoints(
    saver: RedisHotSaver,
    config: RunnableConfig | None,
    filter: Mapping[str, Any] | None,
    before: RunnableConfig | None,
    limit: int | None,
) -> AsyncIterator[CheckpointTuple]:
    configurable = (config or {}).get("configurable") or {}
    thread_id = configurable.get("thread_id")
    if thread_id is not None:
        validate_id("thread_id", thread_id, saver.limits)
    ns = configurable.get("checkpoint_ns")
    if ns is not None:
        validate_id("checkpoint_ns", ns, saver.limits, allow_empty=True)
    only_id = configurable.get("checkpoint_id") or None
    before_id = ((before or {}).get("configurable") or {}).get("checkpoint_id") or None
    if limit is not None and limit <= 0:
        return
    left = limit
    client = await saver.aclient()
    page = BATCH if filter or limit is None else min(limit, BATCH)
    candidates = _candidates(saver, client, thread_id, ns, only_id, before_id, page)
    async with aclosing(_batched(candidates, page)) as batches:
        async for batch in batches:
            for item in await _load_batch(saver, client, batch, filter):
                yield item
                if left is not None:
                    left -= 1
                    if left <= 0:
                        return


async def _candidates(
    saver: RedisHotSaver,
    client: Client,
    thread_id: str | None,
    ns: str | None,
    only_id: str | None,
    before_id: str | None,
    page: int,
) -> AsyncIterator[tuple[str, bytes]]:
    """``(thread_id, cp field)`` of the checkpoints to list, newest first."""
    if thread_id is not None and ns is not None and only_id is None:
        idx = saver.thread_keys(thread_id).idx
        upper, lower = K.latest_range(ns, before_id)
        while True:
            with saver._errors():
                fields = await client.zrange(
                    idx, upper, lower, desc=True, bylex=True, offset=0, num=page
                )
            for field in fields:
                yield thread_id, field
            if len(fields) < page:
                return
            upper = b"(" + fields[-1]
    threads = [thread_id] if thread_id is not None else await registered_threads(saver)
    found: list[tuple[str, str, str, bytes]] = []
    for chunk in K.chunks(threads, BATCH):
        replies = await saver._pipeline(
            client, lambda p, c=chunk: [p.zrange(saver.thread_keys(t).idx, 0, -1) for t in c]
        )
        for tid, fields in zip(chunk, replies, strict=True):
            for field in fields:
                field_ns, field_id = K.split_cp_field(field)
                if (
                    (ns is None or field_ns == ns)
                    and (only_id is None or field_id == only_id)
                    and (before_id is None or field_id < before_id)
                ):
                    found.append((field_id, tid, field_ns, field))
    found.sort(reverse=True)
    for _, tid, _, field in found:
        yield tid, field


async def registered_threads(saver: RedisHotSaver) -> list[str]:
    """Every registered thread. Members whose thread is gone (expired) are forgotten
    here, lazily, and only once their last write is ``REGISTRY_GRACE_S`` old."""
    client = await saver.aclient()
    with saver._errors():
        members = await client.zrange(saver.registry_key, 0, -1, withscores=True)
    threads = [(member.decode("utf-8", "surrogatepass"), score) for member, score in members]
    stale = [(t, s) for t, s in threads if s < time.time() - K.REGISTRY_GRACE_S]
    gone: set[str] = set()
    for chunk in K.chunks(stale, BATCH):
        exists = await saver._pipeline(
            client, lambda p, c=chunk: [p.exists(saver.thread_keys(t).meta) for t, _ in c]
        )
        for (tid, score), alive in zip(chunk, exists, strict=True):
            if not alive:
                gone.add(tid)
                args = [K.utf8(tid), repr(score)]
                await saver._eval(client, S.FORGET, [saver.registry_key], args)
    return [t for t, _ in threads if t not in gone]


async def _load_batch(
    saver: RedisHotSaver,
    client: Client,
    batch: list[tuple[str, bytes]],
    filter: Mapping[str, Any] | None,
) -> list[CheckpointTuple]:
    by_thread: dict[str, list[bytes]] = {}
    for tid, field in batch:
        by_thread.setdefault(tid, []).append(field)
    if filter:
        threads = list(by_thread)
        stored = await saver._pipeline(
            client, lambda p: [p.hmget(saver.thread_keys(t).cp, by_thread[t]) for t in threads]
        )
        for tid, values in zip(threads, stored, strict=True):
            by_thread[tid] = [
                f
                for f, v in zip(by_thread[tid], values, strict=True)
                if v is not None and K.stored_metadata_matches(v, filter)
            ]
        by_thread = {t: f for t, f in by_thread.items() if f}
    if not by_thread:
        return []
    threads = list(by_thread)

    def build(pipe: Any) -> None:
        for tid in threads:
            keys = saver.thread_keys(tid).data
            S.LOAD.queue(pipe, keys, [*saver._load_head(tid), b"fields", *by_thread[tid]])

    loaded: dict[tuple[str, bytes], CheckpointTuple] = {}
    for tid, reply in zip(threads, await saver._pipeline(client, build), strict=True):
        for item in saver._tuples(tid, reply):
            conf = item.config["configurable"]
            loaded[(tid, K.cp_field(conf["checkpoint_ns"], conf["checkpoint_id"]))] = item
    return [loaded[key] for key in batch if key in loaded]


async def _batched(items: AsyncIterator[Any], size: int) -> AsyncIterator[list[Any]]:
    batch: list[Any] = []
    async with aclosing(items):  # type: ignore[type-var]
        async for item in items:
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch
