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

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.typing import KeyT, StreamIdT

from langgraph_dualsaver.errors import ConfigurationError
from langgraph_dualsaver.hot.keys import (
    ThreadKeys,
    dead_letter_key,
    outbox_key,
    shard_of,
    text,
    thread_keys,
    utf8,
)
from langgraph_dualsaver.hot.scripts import ACK, DISCARD
from langgraph_dualsaver.records import (
    CheckpointRecord,
    WritesRecord,
    pack_record,
    unpack_record,
)

if TYPE_CHECKING:
    from langgraph_dualsaver.hot.connection import RedisConnection
    from langgraph_dualsaver.hot.saver import RedisHotSaver

__all__ = [
    "GROUP",
    "Entry",
    "Outbox",
    "OutboxKey",
    "clock_position",
    "decode_entry",
    "entry_id_at",
    "position",
    "position_ms",
    "record_fields",
]

GROUP = "dualsaver-flushers"
RECORD_FIELD = b"r"
TOMBSTONE_FIELD = b"d"
TAG_FIELD = b"m"
_TAG_BYTES = 16
"""HMAC-SHA256 truncated to 128 bits: forging one still takes 2**128 tries."""
_SEQ_BITS = 20
"""An entry id ``<ms>-<seq>`` is the position ``(ms << 20) | seq``."""


# -- positions: an entry id as one order-preserving integer (PostgreSQL's ``seq``) --------


def position(entry_id: str | bytes) -> int:
    """A stream entry id ``<ms>-<seq>`` as one BIGINT-safe, order-preserving integer:
    ``(ms << 20) | seq``. PostgreSQL keeps it with every row (``seq``)."""
    entry = text(entry_id)
    ms_text, _, seq_text = entry.partition("-")
    ms, seq = int(ms_text), int(seq_text or 0)
    if seq >= 1 << _SEQ_BITS or ms < 0 or seq < 0:
        raise ValueError(f"stream id {entry!r} does not fit (ms << {_SEQ_BITS}) | seq")
    return (ms << _SEQ_BITS) | seq


def entry_id_at(at: int) -> str:
    """The stream entry id of a position."""
    return f"{at >> _SEQ_BITS}-{at & ((1 << _SEQ_BITS) - 1)}"


def position_ms(at: int) -> int:
    """The millisecond (Redis server time) of a position."""
    return at >> _SEQ_BITS


def clock_position() -> int:
    """This machine's clock as a position: the last one of the current millisecond.
    Used where Redis cannot number a write (it is down), so the order against queued
    entries is the clocks'."""
    return ((int(time.time() * 1000) + 1) << _SEQ_BITS) - 1


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


def _tag(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 of the parts, each length-prefixed so no two part lists sign alike.
    One-shot ``hmac.digest`` (OpenSSL's fast path), not an ``hmac.new`` object."""
    message = b"".join(len(part).to_bytes(8, "big") + part for part in parts)
    return hmac.digest(key, message, hashlib.sha256)[:_TAG_BYTES]


def record_fields(
    record: CheckpointRecord | WritesRecord, key: OutboxKey | None
) -> tuple[bytes, bytes]:
    """A record's outbox entry: its packed bytes (field ``r``) and their tag (field
    ``m``; empty without a key). The hot tier's STORE script writes them."""
    payload = pack_record(record)
    return payload, key.record_tag(payload) if key is not None else b""


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
        return position(self.id)

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
    position(entry_id)  # an id that does not fit a position is refused here
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
    """The chain's queue: every shard's outbox stream of one hot tier, read through one
    consumer group. The flusher and the write_through committer use only this.

    Args:
        conn: the hot tier's connection (its error mapping is this queue's too).
        prefix, shards: the hot tier's key layout (``hot.keys``).
        ttl_ms: the threads' expiry, given once nothing of theirs is queued (0: none).
        consumer: this consumer's name in the group.
        key: the key entries must be authenticated with; ``None`` trusts every entry
            (only to drain what a version without authentication queued).
    """

    def __init__(
        self,
        conn: RedisConnection,
        *,
        prefix: str,
        shards: int,
        ttl_ms: int,
        consumer: str,
        key: OutboxKey | None = None,
    ) -> None:
        self.conn = conn
        self.prefix = prefix
        self.shards = shards
        self.ttl_ms = ttl_ms
        self.consumer = consumer
        self.key = key
        self.streams = [outbox_key(prefix, shard) for shard in range(shards)]
        """Every shard's outbox stream, in shard order."""

    @classmethod
    def of(cls, hot: RedisHotSaver, consumer: str, key: OutboxKey | None = None) -> Outbox:
        """The outbox of a hot tier (``RedisHotSaver(outbox=True)`` fills it)."""
        return cls(
            hot.conn, prefix=hot.prefix, shards=hot.shards, ttl_ms=hot.ttl_ms,
            consumer=consumer, key=key,
        )  # fmt: skip

    def dead_letter_stream(self, stream: str | int) -> str:
        """The dead-letter stream of a shard, given its outbox stream or its number."""
        if isinstance(stream, str):
            if stream not in self.streams:
                raise ConfigurationError(f"{stream!r} is not an outbox stream of this saver")
            stream = self.streams.index(stream)
        return dead_letter_key(self.prefix, stream)

    # -- consuming ------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the consumer group on every stream, from the start of the stream."""
        client = await self.conn.client()
        with self.conn.errors():
            for stream in self.streams:
                try:
                    await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
                except redis_errors.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    async def read(self, count: int, *, own_pending: bool) -> list[Entry]:
        """Entries for this consumer: its own unacknowledged ones, or new ones."""
        start = "0" if own_pending else ">"
        entries: list[Entry] = []
        with self.conn.errors():
            try:
                replies = await self._read(start, count)
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self.ensure_group()  # the stream was deleted (FLUSHALL, a new server)
                replies = await self._read(start, count)
        for reply in replies:
            for stream_name, items in reply or []:
                stream = text(stream_name)
                for entry_id, fields in items:
                    if fields:  # an own-pending entry deleted meanwhile comes back empty
                        entries.append(decode_entry(stream, entry_id, fields, self.key))
        return entries

    async def _read(self, start: str, count: int) -> list[Any]:
        """Every stream's next entries: one XREADGROUP naming all of them on one server
        (profiled: a pipeline of one per shard was 5 % of a write_behind step's CPU),
        one per stream on a cluster, where the streams live on several nodes."""
        client = await self.conn.client()
        if not isinstance(client, RedisCluster):
            streams: dict[KeyT, StreamIdT] = dict.fromkeys(self.streams, start)
            reply = await client.xreadgroup(GROUP, self.consumer, streams, count=count)
            return [reply]
        async with client.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xreadgroup(GROUP, self.consumer, {stream: start}, count=count)
            return await pipe.execute()

    async def claim_idle(self, min_idle_ms: int, count: int) -> list[tuple[Entry, int]]:
        """Take over entries other consumers left unacknowledged for ``min_idle_ms``.

        Returns each entry with its delivery count after the claim.
        """
        client = await self.conn.client()
        claimed: list[tuple[Entry, int]] = []
        with self.conn.errors():
            async with client.pipeline(transaction=False) as pipe:
                for stream in self.streams:
                    pipe.xpending_range(
                        stream, GROUP, min="-", max="+", count=count, idle=min_idle_ms
                    )
                replies = await pipe.execute(raise_on_error=False)
            for stream, pending in zip(self.streams, replies, strict=True):
                if not pending or isinstance(pending, Exception):  # no group: nothing held
                    continue
                ids = [p["message_id"] for p in pending]
                deliveries = {text(p["message_id"]): p["times_delivered"] + 1 for p in pending}
                items = cast(  # (id, fields) pairs: no JUSTID, no decode_responses
                    "list[tuple[bytes, dict[bytes, bytes]]]",
                    await client.xclaim(stream, GROUP, self.consumer, min_idle_ms, ids),
                )
                for entry_id, fields in items or []:
                    if fields:
                        entry = decode_entry(stream, entry_id, fields, self.key)
                        claimed.append((entry, deliveries.get(entry.id, 1)))
        return claimed

    # -- settling -------------------------------------------------------------------

    async def ack(self, entries: Sequence[Entry]) -> None:
        """Acknowledge entries whose records are durable: XACK + XDEL and, if this call
        removed the entry, the thread's pending count down (at zero its keys get their
        TTL), atomically, one script per shard, one round trip in all (``ACK``): a
        crash can never leave a thread counted pending forever (it would never expire)."""
        by_shard: dict[int, dict[str, list[str]]] = {}
        for entry in entries:
            if entry.thread_id is None:
                continue
            shard = shard_of(entry.thread_id, self.shards)
            by_shard.setdefault(shard, {}).setdefault(entry.thread_id, []).append(entry.id)
        if not by_shard:
            return

        def build(pipe: Any) -> None:
            for shard, threads in by_shard.items():
                keys = [self.streams[shard]]
                args: list[Any] = [GROUP, self.ttl_ms, len(threads)]
                for thread_id, ids in threads.items():
                    keys += self._thread_keys(thread_id).data
                    args += [utf8(thread_id), len(ids), *ids]
                ACK.queue(pipe, keys, args)

        await self.conn.pipeline(build)

    async def discard(self, entries: Sequence[tuple[str, str]]) -> None:
        """Remove ``(thread_id, entry_id)`` entries whose records the caller committed
        itself (write_through, a delete made durable directly) and count them durable,
        unless a flusher already took them; one round trip (``DISCARD``)."""
        if not entries:
            return

        def build(pipe: Any) -> None:
            for thread_id, entry_id in entries:
                args = [utf8(thread_id), entry_id, self.ttl_ms, GROUP]
                DISCARD.queue(pipe, self._thread_keys(thread_id).all, args)

        await self.conn.pipeline(build)

    async def queued_in_live_thread(self, thread_id: str, entry_id: str) -> bool:
        """Whether entry ``entry_id`` belongs to the thread's live hot copy (it was
        queued since the thread's keys were last created): a record a tombstone refused
        that is still live was written *after* the delete."""
        client = await self.conn.client()
        with self.conn.errors():
            meta = self._thread_keys(thread_id).meta
            owner, since = await client.hmget(meta, ["thread_id", "since"])
        if owner is None or text(owner) != thread_id or since is None:
            return False
        return position(entry_id) >= position(since)

    async def dead_letter_entries(
        self, entries: Sequence[Entry], reason: str, *, cap: int | None = None
    ) -> list[bool]:
        """Move entries to their shard's dead-letter stream with all their fields, each
        in one atomic script (see ``chain.deadletters``).

        Returns, per entry, whether this call removed it from the outbox. An entry whose
        dead-letter stream already holds ``cap`` letters (``DEAD_LETTER_CAP`` if
        ``None``) stays queued and pending, and an error is logged.
        """
        from langgraph_dualsaver.chain.deadletters import DEAD_LETTER_CAP, move

        return await move(
            self.conn,
            entries,
            group=GROUP,
            dead_letter=self.dead_letter_stream,
            reason=reason,
            cap=DEAD_LETTER_CAP if cap is None else cap,
        )

    # -- measuring ------------------------------------------------------------------

    async def length(self) -> int:
        """Entries not yet durable (acknowledged entries are deleted)."""
        return sum(await self.conn.pipeline(lambda pipe: [pipe.xlen(s) for s in self.streams]))

    async def oldest_ms(self) -> int | None:
        """Server time (ms) of the oldest entry not yet durable, from its stream id."""
        replies = await self.conn.pipeline(
            lambda pipe: [pipe.xrange(s, count=1) for s in self.streams]
        )
        stamps = [position_ms(position(items[0][0])) for items in replies if items]
        return min(stamps) if stamps else None

    async def server_time_ms(self) -> int:
        client = await self.conn.client()
        with self.conn.errors():
            seconds, micros = await client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def oldest_age_s(self) -> float | None:
        """Age of the oldest entry not yet durable."""
        oldest = await self.oldest_ms()
        if oldest is None:
            return None
        return max(0.0, (await self.server_time_ms() - oldest) / 1000)

    async def dead_letter_count(self) -> int:
        """Dead letters in all shards (``deadletters.DeadLetters.counts`` per shard)."""
        return sum(
            await self.conn.pipeline(
                lambda pipe: [pipe.xlen(self.dead_letter_stream(s)) for s in self.streams]
            )
        )

    def _thread_keys(self, thread_id: str) -> ThreadKeys:
        return thread_keys(self.prefix, self.shards, thread_id)
