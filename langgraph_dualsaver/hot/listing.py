"""Listing checkpoints from the hot tier, and the thread registry behind ``list(None)``.

One namespace of one thread pages straight from its index (newest first, ``before``
as the range's upper bound). Otherwise the candidates are gathered from the indexes of
the thread (or of every registered thread) and sorted in list order: ids only, no values.
Values load a page at a time (``_paging.PageSizer``), one LOAD script per thread in one
pipeline, so memory holds one page and the first item comes after one; with a
``filter``, the page's metadata is read first so only matching checkpoints load values.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple

from langgraph_dualsaver._paging import ListKey, PageSizer, comes_after, take
from langgraph_dualsaver.hot.keys import (
    REGISTRY_GRACE_S,
    chunks,
    cp_field,
    decode_stored_checkpoint,
    latest_range,
    split_cp_field,
    stored_metadata_matches,
    utf8,
)
from langgraph_dualsaver.hot.scripts import FORGET, LOAD
from langgraph_dualsaver.records import list_arguments

if TYPE_CHECKING:
    from langgraph_dualsaver.hot.saver import RedisHotSaver

__all__ = ["BATCH", "list_checkpoints", "registered_threads", "registry_members"]

BATCH = 100
"""Threads per pipeline."""

FIELDS = 256
"""Index fields (checkpoint ids, no values) read per round trip."""


async def list_checkpoints(
    saver: RedisHotSaver,
    config: RunnableConfig | None,
    filter: Mapping[str, Any] | None,
    before: RunnableConfig | None,
    limit: int | None,
    *,
    after: ListKey | None = None,
) -> AsyncGenerator[CheckpointTuple, None]:
    """The checkpoints ``alist`` lists, in list order; with ``after``, only those
    listed after that one (how the chain resumes a listing)."""
    arguments = list_arguments(config, filter, before, limit, saver.limits)
    if limit is not None and limit <= 0:
        return
    names = FIELDS if filter or limit is None else min(limit, FIELDS)
    bounds = _Bounds(arguments.before_id, after)
    thread_id, ns = arguments.thread_id, arguments.checkpoint_ns
    candidates = _candidates(saver, thread_id, ns, arguments.checkpoint_id, bounds, names)
    async with aclosing(_pages(saver, candidates, filter, limit)) as pages:
        async for page in pages:
            page.reverse()
            while page:  # each item is let go once yielded
                yield page.pop()


async def _pages(
    saver: RedisHotSaver,
    candidates: AsyncIterator[tuple[str, bytes]],
    filter: Mapping[str, Any] | None,
    limit: int | None,
) -> AsyncGenerator[list[CheckpointTuple], None]:
    """The candidates' checkpoints, loaded a page at a time (sized by ``PageSizer``),
    ``limit`` at most."""
    left = limit
    sizer = PageSizer()
    async with aclosing(candidates):  # type: ignore[type-var]
        while left is None or left > 0:
            size = sizer.size if left is None or filter else min(sizer.size, left)
            batch = await take(candidates, size)
            if not batch:
                return
            page, decoded_bytes = await _load_batch(saver, batch, filter)
            sizer.read(len(page), decoded_bytes)
            if left is not None:
                del page[left:]
                left -= len(page)
            yield page
            if len(batch) < size:
                return


@dataclass(frozen=True, slots=True)
class _Bounds:
    """Which checkpoint ids a listing keeps: below ``before_id``, listed after ``after``."""

    before_id: str | None
    after: ListKey | None

    def keeps(self, key: ListKey) -> bool:
        return (self.before_id is None or key[0] < self.before_id) and (
            self.after is None or comes_after(key, self.after)
        )

    def upper(self, thread_id: str, ns: str) -> bytes:
        """The ``ZRANGE ... BYLEX REV`` upper bound for one namespace of one thread."""
        upper, _ = latest_range(ns, self.before_id)
        after = self.after
        if after is not None and (self.before_id is None or after[0] < self.before_id):
            inclusive = (thread_id, ns) > after[1:]  # the same id, listed later
            upper = (b"[" if inclusive else b"(") + cp_field(ns, after[0])
        return upper


async def _candidates(
    saver: RedisHotSaver,
    thread_id: str | None,
    ns: str | None,
    only_id: str | None,
    bounds: _Bounds,
    page: int,
) -> AsyncIterator[tuple[str, bytes]]:
    """``(thread_id, cp field)`` of the checkpoints to list, in list order."""
    if thread_id is not None and ns is not None and only_id is None:
        idx = saver.thread_keys(thread_id).idx
        upper, lower = bounds.upper(thread_id, ns), latest_range(ns)[1]
        while True:
            client = await saver.conn.client()
            with saver.conn.errors():
                reply = await client.zrange(
                    idx, upper, lower, desc=True, bylex=True, offset=0, num=page
                )
            fields = cast("list[bytes]", reply)  # no WITHSCORES, no decode_responses
            for field in fields:
                yield thread_id, field
            if len(fields) < page:
                return
            upper = b"(" + fields[-1]
    threads = [thread_id] if thread_id is not None else await registered_threads(saver)
    found: list[tuple[str, str, str, bytes]] = []
    for chunk in chunks(threads, BATCH):

        def ranges(p: Any, c: list[str] = chunk) -> list[Any]:
            return [p.zrange(saver.thread_keys(t).idx, 0, -1) for t in c]

        replies = await saver.conn.pipeline(ranges)
        for tid, fields in zip(chunk, replies, strict=True):
            for field in fields:
                field_ns, field_id = split_cp_field(field)
                if (
                    (ns is None or field_ns == ns)
                    and (only_id is None or field_id == only_id)
                    and bounds.keeps((field_id, tid, field_ns))
                ):
                    found.append((field_id, tid, field_ns, field))
    found.sort(key=lambda f: (f[1], f[2]))
    found.sort(key=lambda f: f[0], reverse=True)  # stable: thread, namespace ascending
    for _, tid, _, field in found:
        yield tid, field


async def registered_threads(saver: RedisHotSaver) -> list[str]:
    """Every registered thread. Members whose thread is gone (expired) are forgotten
    here, lazily, and only once their last write is ``REGISTRY_GRACE_S`` old."""
    members = await registry_members(saver)
    stale = [(t, s) for t, s in members if s < time.time() - REGISTRY_GRACE_S]
    gone = await _forget_expired(saver, stale)
    return [t for t, _ in members if t not in gone]


async def registry_members(saver: RedisHotSaver) -> list[tuple[str, float]]:
    """``(thread_id, last write time)`` of every registered thread, most recent first,
    from every shard's registry. Members of the single registry of earlier versions are
    moved to their shards' registries on the way."""
    keys = saver.registry_keys()
    replies = await saver.conn.pipeline(
        lambda p: [p.zrange(key, 0, -1, withscores=True) for key in keys]
    )
    members = {m.decode("utf-8", "surrogatepass"): s for reply in replies for m, s in reply}
    if replies[-1]:
        await _move_legacy_members(saver, replies[-1], keys[-1])
    return sorted(members.items(), key=lambda item: item[1], reverse=True)


async def _move_legacy_members(
    saver: RedisHotSaver, members: list[tuple[bytes, float]], legacy: str
) -> None:
    def build(pipe: Any) -> None:
        for member, score in members:
            thread_id = member.decode("utf-8", "surrogatepass")
            pipe.zadd(saver.thread_keys(thread_id).registry, {member: score}, gt=True)
            pipe.zrem(legacy, member)

    await saver.conn.pipeline(build)


async def _forget_expired(saver: RedisHotSaver, stale: list[tuple[str, float]]) -> set[str]:
    gone: set[str] = set()
    for chunk in chunks(stale, BATCH):

        def exist(p: Any, c: list[tuple[str, float]] = chunk) -> list[Any]:
            return [p.exists(saver.thread_keys(t).meta) for t, _ in c]

        exists = await saver.conn.pipeline(exist)
        for (tid, score), alive in zip(chunk, exists, strict=True):
            if not alive:
                gone.add(tid)
                args = [utf8(tid), repr(score)]
                await saver.conn.eval(FORGET, [saver.thread_keys(tid).registry], args)
    return gone


async def _load_batch(
    saver: RedisHotSaver,
    batch: list[tuple[str, bytes]],
    filter: Mapping[str, Any] | None,
) -> tuple[list[CheckpointTuple], int]:
    """The batch's checkpoints (those matching ``filter``), and about how many bytes
    they take decoded."""
    by_thread: dict[str, list[bytes]] = {}
    for tid, field in batch:
        by_thread.setdefault(tid, []).append(field)
    if filter:
        threads = list(by_thread)
        stored = await saver.conn.pipeline(
            lambda p: [p.hmget(saver.thread_keys(t).cp, by_thread[t]) for t in threads]
        )
        for tid, values in zip(threads, stored, strict=True):
            by_thread[tid] = [
                f
                for f, v in zip(by_thread[tid], values, strict=True)
                if v is not None and stored_metadata_matches(v, filter)
            ]
        by_thread = {t: f for t, f in by_thread.items() if f}
    if not by_thread:
        return [], 0
    threads = list(by_thread)

    def build(pipe: Any) -> None:
        for tid in threads:
            keys = saver.thread_keys(tid).data
            LOAD.queue(pipe, keys, saver.load_arguments(tid, b"fields", *by_thread[tid]))

    replies = await saver.conn.pipeline(build)
    decoded_bytes = sum(_decoded_bytes(reply) for reply in replies)
    loaded: dict[tuple[str, bytes], CheckpointTuple] = {}
    for tid, reply in zip(threads, replies, strict=True):
        for item in saver.loaded_tuples(tid, reply):
            conf = item.config["configurable"]
            loaded[(tid, cp_field(conf["checkpoint_ns"], conf["checkpoint_id"]))] = item
    return [loaded[key] for key in batch if key in loaded], decoded_bytes


def _decoded_bytes(reply: Any) -> int:
    """About the bytes a LOAD reply's checkpoints take once decoded: a blob counts once
    per checkpoint that uses it (the reply holds it once; each checkpoint decodes it)."""
    if reply[0] != b"ok":
        return 0
    _, items, flat = reply
    sizes = dict(zip(flat[::2], map(len, flat[1::2]), strict=True))
    total = _nested_bytes(items)
    for item in items:
        fields = decode_stored_checkpoint(item[1]).blob_fields
        total += sum(sizes.get(field, 0) for field in fields)
    return total


def _nested_bytes(reply: Any) -> int:
    if isinstance(reply, (bytes, str)):
        return len(reply)
    if isinstance(reply, list):
        return sum(_nested_bytes(part) for part in reply)
    return 0
