"""Dead letters: outbox entries the flusher gave up on, kept whole, bounded, put back.

Each shard's dead-letter stream (``<prefix>:{<prefix>:s<N>}:dead``) shares its outbox
stream's hash tag, so each step below is one Lua script: atomic, and in one Redis
Cluster slot.

* ``move``: an outbox entry becomes a dead letter, whose fields are ``id`` (the entry's
  outbox id), ``stream`` (its outbox stream), ``reason``, ``at`` (server time, ms since
  the epoch), then every field of the entry verbatim (``Entry.fields``). Whatever the
  outbox writes (a packed record, a tombstone, a thread incarnation, an authentication
  tag) survives untouched. Outbox fields must therefore never be named like these four.
* ``DeadLetters.replay``: the original fields go back on the original outbox stream
  (under a new entry id: a stream only grows), so an authentication tag over the record
  stays valid, and the dead letter is deleted. A thread deletion is never replayed: at
  a new outbox position it would also delete what the thread wrote since.
* ``DeadLetters.purge``: dead letters deleted, for good.

Pending counts: a dead-lettered record stays counted pending on its thread (the flusher
does not release it), so the thread stays hot while the record waits for an operator.
Replay leaves the count alone (the flusher's ACK lowers it once the record is durable);
purge lowers it, and at zero gives the thread's keys their ttl, as ACK does. Letters in
the old layout (``id``, ``reason``, then ``r`` or ``raw``) were released when they were
made, so there it is the other way round: replay raises the count, purge leaves it.

The cap: a shard keeps at most ``cap`` dead letters (``DEAD_LETTER_CAP`` unless the
caller of ``Outbox.dead_letter_entries`` says otherwise). At the cap ``move`` refuses:
the entry stays in the outbox, pending in the consumer group, and is tried again on
later passes; an error is logged each time. Trimming the oldest dead letter instead
would drop a record nobody looked at, and dropping the new one would too; refusing
loses nothing and is loud (``aflush`` waits for the stuck entry and times out,
``dualsaver status`` warns from ``CAP_WARNING_SHARE`` of the cap on) until someone
replays or purges dead letters.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

from langgraph_dualsaver.chain.outbox import (
    RECORD_FIELD,
    TOMBSTONE_FIELD,
    Outbox,
    position,
    position_ms,
)
from langgraph_dualsaver.errors import ConfigurationError, InvalidInputError
from langgraph_dualsaver.hot.keys import text
from langgraph_dualsaver.hot.scripts import PENDING_LUA
from langgraph_dualsaver.records import CheckpointRecord, pack_record, unpack_record

if TYPE_CHECKING:
    from langgraph_dualsaver.chain.outbox import Entry
    from langgraph_dualsaver.hot.connection import RedisConnection
    from langgraph_dualsaver.hot.saver import RedisHotSaver

__all__ = [
    "CAP_WARNING_SHARE",
    "DEAD_LETTER_CAP",
    "DeadLetter",
    "DeadLetters",
    "move",
    "near_cap",
    "parse_letter",
]

logger = logging.getLogger(__name__)

DEAD_LETTER_CAP = 10_000
"""Most dead letters one shard keeps, by default (16 shards: 160,000 in all)."""
CAP_WARNING_SHARE = 0.8
"""``dualsaver status`` warns when a shard holds this share of the cap."""
META_FIELDS = (b"id", b"stream", b"reason", b"at")
"""The fields a dead letter starts with, in this order; the entry's own fields follow."""
REASON_CHARS = 500
_PAGE = 200

# KEYS: outbox, dead. ARGV: group, entry id, cap, reason, then the entry's fields.
# Returns 1 (moved), 0 (the dead-letter stream is full: the entry stays pending) or
# -1 (the entry is gone: another consumer acknowledged or moved it first).
_MOVE = r"""
if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if redis.call('XDEL', KEYS[1], ARGV[2]) == 0 then return -1 end
local t = redis.call('TIME')
local at = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'stream', KEYS[1], 'reason', ARGV[4],
  'at', at, unpack(ARGV, 5))
return 1
"""

# KEYS: dead, outbox, and the thread's meta, cp, idx, blobs, writes when the letter holds
# a record. ARGV: the letter's id, and then the thread_id.
# Returns the new outbox entry id, or false when the dead letter is gone.
_REPLAY = (
    PENDING_LUA
    + r"""
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local f = found[1][2]
local original, old_format = {}, false
if f[1] == 'id' and f[3] == 'stream' and f[5] == 'reason' and f[7] == 'at' then
  if f[4] ~= KEYS[2] then
    return redis.error_reply('DUALSAVER the dead letter belongs to outbox ' .. f[4])
  end
  for i = 9, #f do original[#original + 1] = f[i] end
else
  old_format = true  -- id, reason, then r or raw
  for i = 1, #f, 2 do
    if f[i] == 'r' or f[i] == 'raw' then original = {'r', f[i + 1]} end
  end
end
if #original == 0 then
  return redis.error_reply('DUALSAVER the dead letter holds no outbox fields')
end
local new_id = redis.call('XADD', KEYS[2], '*', unpack(original))
redis.call('XDEL', KEYS[1], ARGV[1])
-- An old-format letter's record was counted durable when it was dead-lettered; queued
-- again, it is pending again (the current layout never stopped counting it).
if old_format and #KEYS == 7 and redis.call('HGET', KEYS[3], 'thread_id') == ARGV[2] then
  redis.call('HINCRBY', KEYS[3], 'pending', 1)
  expire_thread(3, 0)
end
return new_id
"""
)

# KEYS: dead, and the thread's meta, cp, idx, blobs, writes when the letter holds a
# record. ARGV: the letter's id, then the thread_id and the ttl in ms (0: none).
# Returns 1 when this call deleted the letter, 0 when it was gone.
_PURGE = (
    PENDING_LUA
    + r"""
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
-- A current-layout letter kept its record counted pending (the thread stays hot while
-- the record waits for an operator). Purged, the record is given up: count it done,
-- and at zero give the thread's keys their ttl, as the flusher's ACK does.
local f = found[1][2]
if f[3] == 'stream' and #KEYS == 6 and redis.call('HGET', KEYS[2], 'thread_id') == ARGV[2] then
  release(2, 1, tonumber(ARGV[3]))
end
return 1
"""
)


def _eval(pipe: Any, script: str, keys: Sequence[str], args: Sequence[Any]) -> None:
    """Queue an EVAL (through ``execute_command``, which cluster pipelines route by
    the first key). Dead letters are rare, so the script text is sent each time."""
    pipe.execute_command("EVAL", script, len(keys), *keys, *args)


# -- moving entries in --------------------------------------------------------------------


def _entry_fields(entry: Entry) -> list[bytes | str]:
    """The entry's fields, flat and verbatim; rebuilt from the decoded entry only when
    it was made without them (never from a stream read)."""
    if entry.fields:
        return [part for pair in entry.fields.items() for part in pair]
    if entry.record is not None:
        return ["r", pack_record(entry.record)]
    if entry.deleted_thread is not None:
        return ["d", entry.deleted_thread]
    return ["r", entry.undecodable or b""]


async def move(
    conn: RedisConnection,
    entries: Sequence[Entry],
    *,
    group: str,
    dead_letter: Callable[[str], str],
    reason: str,
    cap: int,
) -> list[bool]:
    """Move each entry to its shard's dead-letter stream, one atomic script per entry.

    Returns, per entry, whether this call removed it from the outbox. An entry is kept
    (pending, for a later pass) when its dead-letter stream holds ``cap`` letters.
    """
    if cap < 1:
        raise ConfigurationError(f"the dead-letter cap must be at least 1, got {cap}")
    if not entries:
        return []

    def build(pipe: Any) -> None:
        for entry in entries:
            keys = [entry.stream, dead_letter(entry.stream)]
            args = [group, entry.id, cap, reason[:REASON_CHARS], *_entry_fields(entry)]
            _eval(pipe, _MOVE, keys, args)

    outcomes = await conn.pipeline(build)
    for entry, outcome in zip(entries, outcomes, strict=True):
        if int(outcome) == 0:
            logger.error(
                "dead-letter stream %s is full (%d letters, the cap): outbox entry %s "
                "(%s) stays queued and is retried; `dualsaver deadletters list` shows the "
                "dead letters, `replay` or `purge` makes room",
                dead_letter(entry.stream),
                cap,
                entry.id,
                reason[:REASON_CHARS],
            )
    return [int(outcome) == 1 for outcome in outcomes]


# -- reading them -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter, and the outbox entry it keeps."""

    shard: int
    dead_stream: str
    """The dead-letter stream holding it."""
    id: str
    """Its id in ``dead_stream`` (unique in the shard; ``ref`` is unique in the prefix)."""
    entry_id: str | None
    """The outbox entry's id."""
    stream: str
    """The outbox stream the entry came from, and goes back to on replay."""
    reason: str
    at_ms: int
    fields: tuple[tuple[bytes, bytes], ...]
    """The outbox entry's fields, in order, as the outbox wrote them."""

    @property
    def ref(self) -> str:
        """``<shard>:<id>``: what ``find`` (and ``dualsaver deadletters``) take."""
        return f"{self.shard}:{self.id}"

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.at_ms / 1000, tz=timezone.utc)

    @property
    def size(self) -> int:
        """Bytes of the entry's field names and values."""
        return sum(len(name) + len(value) for name, value in self.fields)

    @property
    def kind(self) -> str:
        """``checkpoint``, ``writes``, ``deletion`` (a tombstone) or ``undecodable``."""
        return _described(self)[0]

    @property
    def thread_id(self) -> str | None:
        """The thread the entry is about, when its fields decode."""
        return _described(self)[1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.ref,
            "shard": self.shard,
            "stream": self.stream,
            "entry_id": self.entry_id,
            "kind": self.kind,
            "thread_id": self.thread_id,
            "reason": self.reason,
            "at": self.at,
            "size": self.size,
        }


def _described(letter: DeadLetter) -> tuple[str, str | None]:
    found = dict(letter.fields)
    if TOMBSTONE_FIELD in found:
        return "deletion", text(found[TOMBSTONE_FIELD])
    try:
        record = unpack_record(found[RECORD_FIELD])
    except (KeyError, IndexError, TypeError, ValueError):  # msgpack errors are ValueErrors
        return "undecodable", None
    return ("checkpoint" if isinstance(record, CheckpointRecord) else "writes"), record.thread_id


def parse_letter(
    shard: int, dead_stream: str, letter_id: bytes | str, raw: Mapping[bytes, bytes]
) -> DeadLetter:
    """A dead letter from its stream fields, in this module's layout or the older one
    (``id``, ``reason``, then ``r`` or ``raw``)."""
    items = [(bytes(k), bytes(v)) for k, v in raw.items()]
    found = dict(items)
    letter_id = text(letter_id)
    if tuple(k for k, _ in items[:4]) == META_FIELDS:
        fields = tuple(items[4:])
        stream, at_ms = text(found[b"stream"]), int(found[b"at"])
    else:
        kept = found.get(RECORD_FIELD, found.get(b"raw"))
        fields = ((RECORD_FIELD, kept),) if kept is not None else ()
        stream = dead_stream.removesuffix(":dead") + ":outbox"
        at_ms = position_ms(position(letter_id))  # the letter's own id is its time
    entry_id = found.get(b"id")
    return DeadLetter(
        shard=shard,
        dead_stream=dead_stream,
        id=letter_id,
        entry_id=text(entry_id) if entry_id is not None else None,
        stream=stream,
        reason=text(found.get(b"reason", b"")),
        at_ms=at_ms,
        fields=fields,
    )


def _parse_ref(ref: str, shard: int | None) -> tuple[int | None, str]:
    """``(shard, stream id)`` of ``<shard>:<id>`` or of a bare ``<id>``."""
    letter_id = ref
    if ":" in ref:
        shard_text, letter_id = ref.split(":", 1)
        if not shard_text.isdigit() or shard not in (None, int(shard_text)):
            raise InvalidInputError(f"{ref!r} is not <shard>:<id> (of the shard given)")
        shard = int(shard_text)
    try:
        position(letter_id)
    except ValueError as exc:
        raise InvalidInputError(f"{ref!r} is not a dead letter id: {exc}") from exc
    return shard, letter_id


def _newest_first(letter: DeadLetter) -> tuple[int, int]:
    return (-position(letter.id), letter.shard)


class DeadLetters:
    """The dead letters of one hot tier, across its shards.

    ``newest``/``find`` read; ``replay``/``purge`` act on one letter, each in one
    atomic script; ``replay_all``/``purge_all`` act on the letters that ``marks``
    saw, never on ones dead-lettered since (a replayed entry that fails again must not
    come back in the same sweep).
    """

    def __init__(self, hot: RedisHotSaver) -> None:
        self.hot = hot
        self.outbox = Outbox.of(hot, consumer="dualsaver-deadletters")

    @property
    def streams(self) -> dict[int, str]:
        """Shard number -> its dead-letter stream."""
        return {shard: self.outbox.dead_letter_stream(shard) for shard in range(self.hot.shards)}

    async def counts(self) -> dict[int, int]:
        """Dead letters per shard."""
        streams = self.streams
        lengths = await self.hot.conn.pipeline(lambda p: [p.xlen(s) for s in streams.values()])
        return dict(zip(streams, (int(n) for n in lengths), strict=True))

    async def marks(self) -> dict[int, str]:
        """Each non-empty shard's newest dead letter id: where a sweep stops."""
        streams = self.streams
        newest = await self.hot.conn.pipeline(
            lambda p: [p.xrevrange(s, count=1) for s in streams.values()]
        )
        found = zip(streams, newest, strict=True)
        return {shard: text(items[0][0]) for shard, items in found if items}

    async def newest(self, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters, newest first; at most ``limit`` (all with ``None``)."""
        streams = self.streams
        replies = await self.hot.conn.pipeline(
            lambda p: [p.xrevrange(s, count=limit) for s in streams.values()]
        )
        letters = [
            parse_letter(shard, stream, letter_id, raw)
            for (shard, stream), items in zip(streams.items(), replies, strict=True)
            for letter_id, raw in items
        ]
        return sorted(letters, key=_newest_first)[:limit]

    async def find(self, ref: str, shard: int | None = None) -> list[DeadLetter]:
        """The dead letters ``ref`` names: ``<shard>:<id>`` names one; a bare stream id
        names one per shard that has it (letters made together in several shards share
        ids), unless ``shard`` picks one."""
        shard, letter_id = _parse_ref(ref, shard)
        streams = self.streams
        if shard is not None:
            if shard not in streams:
                raise InvalidInputError(f"there is no shard {shard} (0..{len(streams) - 1})")
            streams = {shard: streams[shard]}
        replies = await self.hot.conn.pipeline(
            lambda p: [p.xrange(s, letter_id, letter_id) for s in streams.values()]
        )
        return [
            parse_letter(n, stream, found_id, raw)
            for (n, stream), items in zip(streams.items(), replies, strict=True)
            for found_id, raw in items
        ]

    def refusal(self, letter: DeadLetter) -> str | None:
        """Why ``letter`` cannot be replayed, or ``None``."""
        if letter.kind == "deletion":
            return (
                "a thread deletion is not replayed: under a new outbox position it would "
                "also delete what the thread wrote since; if the thread should still go, "
                f"run `dualsaver delete {letter.thread_id}`, then purge this dead letter"
            )
        if not letter.fields:
            return "the dead letter holds no outbox fields (an old-format deletion)"
        if letter.stream not in self.outbox.streams or (
            self.outbox.dead_letter_stream(letter.stream) != letter.dead_stream
        ):
            return f"it names outbox stream {letter.stream!r}, which is not its shard's"
        return None

    async def replay(self, letters: Sequence[DeadLetter]) -> list[str | None]:
        """Put each letter's entry back on its outbox and delete the letter, atomically
        per letter. Returns the new outbox entry ids (``None``: the letter was gone).
        Raises ``InvalidInputError`` for a letter ``refusal`` refuses."""
        for letter in letters:
            why = self.refusal(letter)
            if why is not None:
                raise InvalidInputError(f"dead letter {letter.ref} not replayed: {why}")
        return await self._replay(letters)

    async def _replay(self, letters: Sequence[DeadLetter]) -> list[str | None]:
        if not letters:
            return []

        def build(pipe: Any) -> None:
            for letter in letters:
                keys, args = self._replay_keys(letter)
                _eval(pipe, _REPLAY, keys, args)

        new_ids = await self.hot.conn.pipeline(build)
        return [text(new_id) if new_id else None for new_id in new_ids]

    def _thread_keys(self, letter: DeadLetter) -> list[str]:
        """The keys of the record's thread, when the letter holds a record of a thread
        in the letter's own shard (so one script may touch them)."""
        thread_id = letter.thread_id
        if letter.kind not in ("checkpoint", "writes") or thread_id is None:
            return []
        thread = self.hot.thread_keys(thread_id)
        return thread.data if thread.outbox == letter.stream else []

    def _replay_keys(self, letter: DeadLetter) -> tuple[list[str], list[str]]:
        thread = self._thread_keys(letter)
        args = [letter.id]
        if thread and letter.thread_id is not None:  # thread keys imply a thread id
            args.append(letter.thread_id)
        return [letter.dead_stream, letter.stream, *thread], args

    async def purge(self, letters: Sequence[DeadLetter]) -> int:
        """Delete these dead letters, each with its record's pending count (one atomic
        script per letter); returns how many were still there."""
        if not letters:
            return 0

        def build(pipe: Any) -> None:
            for letter in letters:
                thread = self._thread_keys(letter)
                args = [letter.id, *([letter.thread_id, self.hot.ttl_ms] if thread else [])]
                _eval(pipe, _PURGE, [letter.dead_stream, *thread], args)

        return sum(int(n) for n in await self.hot.conn.pipeline(build))

    async def purge_all(self, marks: Mapping[int, str]) -> int:
        """Purge every dead letter up to each shard's mark; returns how many."""
        purged = 0
        async for page in self._pages(marks):
            purged += await self.purge(page)
        return purged

    async def replay_all(
        self, marks: Mapping[int, str]
    ) -> tuple[list[tuple[DeadLetter, str]], list[tuple[DeadLetter, str]]]:
        """Replay every dead letter up to each shard's mark, oldest first. Returns
        ``(replayed, kept)``: each letter with its new outbox entry id, or with why it
        was left where it is."""
        replayed: list[tuple[DeadLetter, str]] = []
        kept: list[tuple[DeadLetter, str]] = []
        async for page in self._pages(marks):
            refusals = [(letter, self.refusal(letter)) for letter in page]
            kept += [(letter, why) for letter, why in refusals if why is not None]
            ok = [letter for letter, why in refusals if why is None]
            for letter, new_id in zip(ok, await self._replay(ok), strict=True):
                if new_id is not None:
                    replayed.append((letter, new_id))
        return replayed, kept

    async def _pages(self, marks: Mapping[int, str]) -> AsyncIterator[list[DeadLetter]]:
        """Each shard's dead letters up to its mark, oldest first, a page at a time."""
        client = await self.hot.aclient()
        for shard, newest in marks.items():
            stream, start = self.streams[shard], "-"
            while True:
                with self.hot.conn.errors():
                    items = cast(  # (id, fields) pairs: no decode_responses
                        "list[tuple[bytes, dict[bytes, bytes]]]",
                        await client.xrange(stream, start, newest, count=_PAGE),
                    )
                if not items:
                    break
                yield [parse_letter(shard, stream, letter_id, raw) for letter_id, raw in items]
                start = "(" + text(items[-1][0])


def near_cap(counts: Mapping[int, int], cap: int) -> list[str]:
    """A warning for each shard holding at least ``CAP_WARNING_SHARE`` of the cap."""
    found = []
    for shard, count in sorted(counts.items()):
        if count >= cap * CAP_WARNING_SHARE:
            state = "is full" if count >= cap else f"is at {count * 100 // cap}% of the cap"
            found.append(
                f"shard {shard}'s dead-letter stream {state} ({count:,} of {cap:,}): at the "
                "cap the flusher keeps poison entries queued in the outbox instead; "
                "`dualsaver deadletters list` shows them, `replay` or `purge` makes room"
            )
    return found
