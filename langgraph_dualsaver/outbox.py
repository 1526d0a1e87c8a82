"""The outbox: Redis Streams operations of the chain, one consumer group per prefix.

Every hot write appends its record to its shard's outbox stream in the same script as
the write itself (``RedisHotSaver(outbox=True)``). This module reads those streams with a
consumer group, reclaims the entries of dead consumers, moves poison entries to the
dead-letter stream and removes an entry (``XACK`` + ``XDEL``) only after its record is
committed to PostgreSQL, so the stream is trimmed only behind what is durable.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from redis import exceptions as redis_errors

from langgraph_dualsaver.errors import StoreUnavailableError
from langgraph_dualsaver.keys import stream_seq, text
from langgraph_dualsaver.records import (
    CheckpointRecord,
    WritesRecord,
    unpack_record,
)

P = ParamSpec("P")
T = TypeVar("T")


def _reachable(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Report an unreachable Redis as ``StoreUnavailableError``, like the savers do."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise StoreUnavailableError(f"redis outbox unavailable: {exc}") from exc

    return wrapper


__all__ = ["GROUP", "Entry", "Outbox"]

GROUP = "dualsaver-flushers"


@dataclass(frozen=True, slots=True)
class Entry:
    """One outbox entry: a record to make durable, or a thread deletion (a tombstone)."""

    stream: str
    id: str
    record: CheckpointRecord | WritesRecord | None
    deleted_thread: str | None = None
    undecodable: bytes | None = None
    fields: Mapping[bytes, bytes] = field(default_factory=dict)
    """The entry's raw fields, as the stream holds them (dead letters keep them all)."""

    @property
    def seq(self) -> int:
        return stream_seq(self.id)

    @property
    def thread_id(self) -> str | None:
        if self.record is not None:
            return self.record.thread_id
        return self.deleted_thread


def _decode(stream: str, entry_id: bytes | str, fields: dict) -> Entry:
    entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if b"d" in fields:
        return Entry(stream, entry_id, None, deleted_thread=fields[b"d"].decode(), fields=fields)
    raw = fields.get(b"r", b"")
    try:
        return Entry(stream, entry_id, unpack_record(raw), fields=fields)
    except (ValueError, TypeError, KeyError) as exc:  # msgpack errors derive from ValueError
        del exc
        return Entry(stream, entry_id, None, undecodable=raw, fields=fields)


class Outbox:
    """Consumer-group operations over a set of outbox streams.

    Args:
        client: a ``redis.asyncio`` client (or cluster client).
        streams: the outbox stream keys (one per shard).
        dead_letter: maps an outbox stream key to its dead-letter stream key.
        consumer: this consumer's name in the group.
    """

    def __init__(self, client, streams: Sequence[str], dead_letter, consumer: str) -> None:
        self.client = client
        self.streams = list(streams)
        self.dead_letter = dead_letter
        self.consumer = consumer

    @_reachable
    async def ensure_group(self) -> None:
        """Create the consumer group on every stream, from the start of the stream."""
        for stream in self.streams:
            try:
                await self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    @_reachable
    async def read(self, count: int, *, own_pending: bool) -> list[Entry]:
        """Entries for this consumer: its own unacknowledged ones, or new ones."""
        start = "0" if own_pending else ">"
        entries: list[Entry] = []
        try:
            replies = await self._read(start, count)
        except redis_errors.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()  # the stream was deleted (FLUSHALL, a new server)
            replies = await self._read(start, count)
        for reply in replies:
            for stream_name, items in reply or []:
                stream = stream_name.decode() if isinstance(stream_name, bytes) else stream_name
                for entry_id, fields in items:
                    if fields:  # an own-pending entry deleted meanwhile comes back empty
                        entries.append(_decode(stream, entry_id, fields))
        return entries

    async def _read(self, start: str, count: int) -> list:
        async with self.client.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xreadgroup(GROUP, self.consumer, {stream: start}, count=count)
            return await pipe.execute()

    @_reachable
    async def claim_idle(self, min_idle_ms: int, count: int) -> list[tuple[Entry, int]]:
        """Take over entries other consumers left unacknowledged for ``min_idle_ms``.

        Returns each entry with its delivery count after the claim.
        """
        claimed: list[tuple[Entry, int]] = []
        async with self.client.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xpending_range(stream, GROUP, min="-", max="+", count=count, idle=min_idle_ms)
            replies = await pipe.execute(raise_on_error=False)
        for stream, pending in zip(self.streams, replies, strict=True):
            if not pending or isinstance(pending, Exception):  # no group yet: nothing held
                continue
            ids = [p["message_id"] for p in pending]
            deliveries = {text(p["message_id"]): p["times_delivered"] + 1 for p in pending}
            items = await self.client.xclaim(stream, GROUP, self.consumer, min_idle_ms, ids)
            for entry_id, fields in items or []:
                if fields:
                    entry = _decode(stream, entry_id, fields)
                    claimed.append((entry, deliveries.get(entry.id, 1)))
        return claimed

    @_reachable
    async def dead_letter_entries(
        self, entries: Sequence[Entry], reason: str, *, cap: int | None = None
    ) -> list[bool]:
        """Move entries to their shard's dead-letter stream with all their fields, each
        in one atomic script (see ``deadletters``).

        Returns, per entry, whether this call removed it from the outbox. An entry whose
        dead-letter stream already holds ``cap`` letters (``DEAD_LETTER_CAP`` if
        ``None``) stays queued and pending, and an error is logged.
        """
        from langgraph_dualsaver.deadletters import DEAD_LETTER_CAP, move

        return await move(
            self.client,
            entries,
            group=GROUP,
            dead_letter=self.dead_letter,
            reason=reason,
            cap=DEAD_LETTER_CAP if cap is None else cap,
        )

    @_reachable
    async def length(self) -> int:
        """Entries not yet durable (acknowledged entries are deleted)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xlen(stream)
            return sum(await pipe.execute())

    @_reachable
    async def oldest_ms(self) -> int | None:
        """Server time (ms) of the oldest entry not yet durable, from its stream id."""
        async with self.client.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xrange(stream, count=1)
            replies = await pipe.execute()
        stamps = [int(items[0][0].split(b"-")[0]) for items in replies if items]
        return min(stamps) if stamps else None

    @_reachable
    async def server_time_ms(self) -> int:
        seconds, micros = await self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def oldest_age_s(self) -> float | None:
        """Age of the oldest entry not yet durable."""
        oldest = await self.oldest_ms()
        if oldest is None:
            return None
        return max(0.0, (await self.server_time_ms() - oldest) / 1000)

    @_reachable
    async def dead_letter_count(self) -> int:
        """Dead letters in all shards (``deadletters.DeadLetters.counts`` per shard)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xlen(self.dead_letter(stream))
            return sum(await pipe.execute())

    @_reachable
    async def group_pending(self) -> int:
        """Entries delivered to some consumer and not yet acknowledged."""
        total = 0
        for stream in self.streams:
            try:
                info = await self.client.xpending(stream, GROUP)
            except redis_errors.ResponseError:
                continue  # no group yet: nothing delivered
            total += int(info["pending"])
        return total
