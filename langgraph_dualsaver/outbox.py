"""The outbox: Redis Streams operations of the chain, one consumer group per prefix.

Every hot write appends its record to its shard's outbox stream in the same script as
the write itself (``RedisHotSaver(outbox=True)``). This module reads those streams with a
consumer group, reclaims the entries of dead consumers, moves poison entries to the
dead-letter stream and removes an entry (``XACK`` + ``XDEL``) only after its record is
committed to PostgreSQL, so the stream is trimmed only behind what is durable.

Entries are authenticated: a record entry carries ``r`` (``records.pack_record``) and
``m``, an HMAC-SHA256 tag of it under the installation's outbox key; a tombstone carries
``d`` (the thread_id) and ``m``, a tag of the thread_id *and its own entry id* (the
saver picks the id), so a copy of an old tombstone added later is refused instead of
deleting whatever was written since. Whatever fails to decode or to authenticate is
dead-lettered, never applied: anyone who can write the stream can make noise, not
delete or forge durable history.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ParamSpec, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

from langgraph_dualsaver.errors import ConfigurationError, StoreUnavailableError
from langgraph_dualsaver.keys import stream_seq, text
from langgraph_dualsaver.records import (
    CheckpointRecord,
    WritesRecord,
    unpack_record,
)

P = ParamSpec("P")
T = TypeVar("T")


_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    # A cluster in a failover or resharding (these subclass ResponseError):
    redis_errors.ClusterError,  # CLUSTERDOWN, MASTERDOWN
    redis_errors.AskError,  # and MOVED
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,
)


def _reachable(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Report an unreachable Redis as ``StoreUnavailableError``, like the savers do."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(f"redis outbox unavailable: {exc}") from exc

    return wrapper


__all__ = ["GROUP", "Entry", "Outbox", "OutboxKey", "clock_position", "decode_entry"]

GROUP = "dualsaver-flushers"
RECORD_FIELD = b"r"
TOMBSTONE_FIELD = b"d"
TAG_FIELD = b"m"
_TAG_BYTES = 16
"""HMAC-SHA256 truncated to 128 bits: forging one still takes 2**128 tries."""


@dataclass(frozen=True, slots=True)
class OutboxKey:
    """The secret that authenticates outbox entries, and the previous ones still
    accepted while entries signed with them drain (a key rotation)."""

    current: bytes
    previous: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        for key in (self.current, *self.previous):
            if not isinstance(key, bytes) or len(key) < 16:
                raise ConfigurationError("an outbox key must be at least 16 bytes")

    @classmethod
    def generate(cls) -> OutboxKey:
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_text(cls, text: str) -> OutboxKey:
        """Keys as configured (``DUALSAVER_OUTBOX_KEY``): hex, the current first, then
        any previous ones, comma-separated."""
        try:
            keys = [bytes.fromhex(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise ConfigurationError(
                "the outbox key must be hex (e.g. from `python -c 'import secrets; "
                "print(secrets.token_hex(32))'`), optionally followed by ',<previous key>'"
            ) from exc
        if not keys:
            raise ConfigurationError("the outbox key is empty")
        return cls(keys[0], tuple(keys[1:]))

    def record_tag(self, payload: bytes) -> bytes:
        return _tag(self.current, b"r", payload)

    def tombstone_tag(self, entry_id: str, thread_id: str) -> bytes:
        return _tag(self.current, b"d", entry_id.encode(), thread_id.encode("utf-8"))

    def accepts(self, tag: bytes | None, *parts: bytes) -> bool:
        if not tag:
            return False
        return any(
            hmac.compare_digest(tag, _tag(key, *parts)) for key in (self.current, *self.previous)
        )


def clock_position() -> int:
    """This machine's clock as an outbox position: the last one of the current
    millisecond (``keys.stream_seq`` of ``<ms>-<max seq>``). Used where Redis cannot
    number a write (it is down), so the order against queued entries is the clocks'."""
    return stream_seq(f"{int(time.time() * 1000)}-{(1 << 20) - 1}")


def _tag(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 of the parts, each length-prefixed so no two part lists sign alike.
    One-shot ``hmac.digest`` (OpenSSL's fast path), not an ``hmac.new`` object."""
    message = b"".join(len(part).to_bytes(8, "big") + part for part in parts)
    return hmac.digest(key, message, hashlib.sha256)[:_TAG_BYTES]


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
    problem: str | None = None
    """Why the entry cannot be applied (undecodable, unauthenticated); ``None`` if it can."""

    @property
    def seq(self) -> int:
        return stream_seq(self.id)

    @property
    def thread_id(self) -> str | None:
        if self.record is not None:
            return self.record.thread_id
        return self.deleted_thread


def decode_entry(
    stream: str, entry_id: bytes | str, fields: Mapping[bytes, bytes], key: OutboxKey | None
) -> Entry:
    """An entry as read from the stream. Never raises: an entry that does not decode or
    authenticate (``key=None`` trusts every entry) comes back with its ``problem``."""
    entry_id = text(entry_id)
    fields = dict(fields)
    try:
        entry = _parse(stream, entry_id, fields)
    except Exception as exc:  # anything in the stream: never let it stop the queue
        return Entry(stream, entry_id, None, undecodable=fields.get(RECORD_FIELD), fields=fields,
                     problem=f"undecodable entry ({type(exc).__name__}: {exc})"[:300])  # fmt: skip
    if key is not None and not _authentic(entry, key):
        return replace(entry, problem="unauthenticated entry (its tag does not match the key)")
    return entry


def _parse(stream: str, entry_id: str, fields: dict[bytes, bytes]) -> Entry:
    stream_seq(entry_id)  # an id that does not fit a position is refused here
    if TOMBSTONE_FIELD in fields:
        thread_id = fields[TOMBSTONE_FIELD].decode("utf-8")
        return Entry(stream, entry_id, None, deleted_thread=thread_id, fields=fields)
    if RECORD_FIELD not in fields:
        raise ValueError("neither a record nor a tombstone")
    return Entry(stream, entry_id, unpack_record(fields[RECORD_FIELD]), fields=fields)


def _authentic(entry: Entry, key: OutboxKey) -> bool:
    tag = entry.fields.get(TAG_FIELD)
    if entry.deleted_thread is not None:
        return key.accepts(tag, b"d", entry.id.encode(), entry.fields[TOMBSTONE_FIELD])
    return key.accepts(tag, b"r", entry.fields[RECORD_FIELD])


class Outbox:
    """Consumer-group operations over a set of outbox streams.

    Args:
        client: a ``redis.asyncio`` client (or cluster client).
        streams: the outbox stream keys (one per shard).
        dead_letter: maps an outbox stream key to its dead-letter stream key.
        consumer: this consumer's name in the group.
        key: the key entries must be authenticated with; ``None`` trusts every entry
            (only to drain what a version without authentication queued).
    """

    def __init__(
        self,
        client,
        streams: Sequence[str],
        dead_letter,
        consumer: str,
        key: OutboxKey | None = None,
    ) -> None:
        self.client = client
        self.streams = list(streams)
        self.dead_letter = dead_letter
        self.consumer = consumer
        self.key = key

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
                        entries.append(decode_entry(stream, entry_id, fields, self.key))
        return entries

    async def _read(self, start: str, count: int) -> list:
        """Every stream's next entries: one XREADGROUP naming all of them on one server
        (profiled: a pipeline of one per shard was 5 % of a write_behind step's CPU),
        one per stream on a cluster, where the streams live on several nodes."""
        if not isinstance(self.client, RedisCluster):
            streams = dict.fromkeys(self.streams, start)
            return [await self.client.xreadgroup(GROUP, self.consumer, streams, count=count)]
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
                    entry = decode_entry(stream, entry_id, fields, self.key)
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
