"""Dead letters on real servers: kept whole, put back unchanged, purged, and capped.

Poison entries are made the way they arrive in life: a bogus entry written straight into
an outbox stream (undecodable), or a real entry read from the outbox and handed to
``Outbox.dead_letter_entries`` (a good record the flusher gave up on).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from langgraph_dualsaver.chain.deadletters import DEAD_LETTER_CAP, DeadLetters, near_cap
from langgraph_dualsaver.chain.flusher import Flusher
from langgraph_dualsaver.chain.outbox import Entry, Outbox
from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.errors import InvalidInputError, StoreUnavailableError
from langgraph_dualsaver.hot.saver import RedisHotSaver
from langgraph_dualsaver.records import pack_record
from tests.cluster import valkey_cluster
from tests.helpers import durable_ids, put_chain

BOGUS = {b"r": b"garbage", b"x-extra": b"\x00\xffkept as is"}


@pytest.fixture
async def saver(redis_url: str, pg_dsn: str, redis_prefix: str) -> AsyncIterator[DualSaver]:
    """write_behind, no background flusher: entries move only when a test flushes."""
    async with DualSaver.from_conn_string(
        redis_url,
        pg_dsn,
        prefix=redis_prefix,
        background_flush=False,
        ttl=timedelta(minutes=5),
    ) as dual:
        await dual.asetup()
        yield dual


async def raw(saver: DualSaver) -> Redis:
    return await saver.hot.aclient()


async def add_bogus(saver: DualSaver, shard: int = 0) -> tuple[str, str]:
    """A bogus entry in a shard's outbox; returns ``(outbox stream, entry id)``."""
    stream = saver.flusher.outbox.streams[shard]
    entry_id = await (await raw(saver)).xadd(stream, dict(BOGUS))
    return stream, entry_id.decode()


async def outbox_fields(saver: DualSaver, stream: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await (await raw(saver)).xrange(stream)]


async def dead_letter_good_records(saver: DualSaver, thread: str, count: int) -> list[Entry]:
    """``count`` checkpoints of ``thread``, their outbox entries dead-lettered unapplied."""
    await put_chain(saver, thread, count)
    outbox = saver.flusher.outbox
    entries = [e for e in await outbox.read(100, own_pending=False) if e.thread_id == thread]
    assert len(entries) == count
    assert await outbox.dead_letter_entries(entries, "rejected by a test") == [True] * count
    return entries


def key_ttls(info: dict) -> list[int]:
    return [ttl for ttl in info["keys"].values() if ttl != -2]


# -- moving in --------------------------------------------------------------------------


async def test_a_dead_letter_keeps_every_field_of_its_entry_and_where_it_came_from(
    saver: DualSaver,
) -> None:
    stream, entry_id = await add_bogus(saver, shard=3)
    before_ms = int(time.time() * 1000)
    await saver.aflush()
    assert await outbox_fields(saver, stream) == []
    letters = await (await raw(saver)).xrange(saver.flusher.outbox.dead_letter_stream(3))
    assert len(letters) == 1
    fields = list(letters[0][1].items())
    assert [name for name, _ in fields[:4]] == [b"id", b"stream", b"reason", b"at"]
    assert fields[0][1] == entry_id.encode() and fields[1][1] == stream.encode()
    assert fields[2][1]  # why, in words
    assert abs(int(fields[3][1]) - before_ms) < 60_000
    assert dict(fields[4:]) == BOGUS and len(fields[4:]) == len(BOGUS)
    assert (await saver.astats()).dead_letters == 1


async def test_listing_reads_each_letter_newest_first_with_its_thread_when_it_decodes(
    saver: DualSaver,
) -> None:
    thread = f"list-{uuid.uuid4()}"
    await add_bogus(saver, shard=1)
    await saver.aflush()
    await dead_letter_good_records(saver, thread, 1)
    newest, oldest = await DeadLetters(saver.hot).newest()
    assert (newest.kind, newest.thread_id, newest.reason) == (
        "checkpoint",
        thread,
        "rejected by a test",
    )
    assert newest.stream == saver.hot.thread_keys(thread).outbox
    assert (oldest.kind, oldest.thread_id, oldest.shard) == ("undecodable", None, 1)
    assert oldest.size == sum(len(k) + len(v) for k, v in BOGUS.items())
    assert newest.at >= oldest.at
    assert [letter.id for letter in await DeadLetters(saver.hot).newest(1)] == [newest.id]


# -- replay -----------------------------------------------------------------------------


async def test_replay_puts_the_identical_fields_back_on_the_outbox_and_removes_the_letter(
    saver: DualSaver,
) -> None:
    stream, _ = await add_bogus(saver, shard=5)
    await saver.aflush()
    letters = DeadLetters(saver.hot)
    (letter,) = await letters.newest()
    (new_id,) = await letters.replay([letter])
    assert new_id is not None
    replayed = await (await raw(saver)).xrange(stream)
    assert [(i.decode(), list(f.items())) for i, f in replayed] == [(new_id, list(BOGUS.items()))]
    assert await letters.counts() == {shard: 0 for shard in range(saver.hot.shards)}
    assert await letters.replay([letter]) == [None]  # gone: replayed once only


async def test_a_good_record_dead_lettered_then_replayed_reaches_postgres(
    saver: DualSaver, pg_dsn: str
) -> None:
    thread = f"good-{uuid.uuid4()}"
    entries = await dead_letter_good_records(saver, thread, 2)
    assert await saver.alag() == 0 and await durable_ids(pg_dsn, thread) == []
    info = await saver.hot.athread_info(thread)
    assert info["pending"] == 2 and set(key_ttls(info)) == {-1}  # kept hot while it waits

    letters = DeadLetters(saver.hot)
    replayed, kept = await letters.replay_all(await letters.marks())
    assert kept == [] and len(replayed) == 2
    stream = saver.hot.thread_keys(thread).outbox
    assert await outbox_fields(saver, stream) == [dict(e.fields) for e in entries]

    await saver.aflush()
    written = sorted(e.record.checkpoint_id for e in entries if e.record is not None)
    assert sorted(await durable_ids(pg_dsn, thread)) == written
    info = await saver.hot.athread_info(thread)
    assert info["pending"] == 0 and all(ttl > 0 for ttl in key_ttls(info))
    assert (await saver.astats()).dead_letters == 0


async def test_a_thread_deletion_is_never_replayed(saver: DualSaver) -> None:
    thread = f"gone-{uuid.uuid4()}"
    stream = saver.hot.thread_keys(thread).outbox
    await (await raw(saver)).xadd(stream, {b"d": thread.encode()})
    outbox = saver.flusher.outbox
    await outbox.dead_letter_entries(await outbox.read(10, own_pending=False), "stuck")
    letters = DeadLetters(saver.hot)
    (letter,) = await letters.newest()
    assert (letter.kind, letter.thread_id) == ("deletion", thread)
    with pytest.raises(InvalidInputError, match="thread deletion is not replayed"):
        await letters.replay([letter])
    replayed, kept = await letters.replay_all(await letters.marks())
    assert replayed == [] and [(k.id, "deletion" in why) for k, why in kept] == [(letter.id, True)]
    assert await letters.counts() == {**{s: 0 for s in range(saver.hot.shards)}, letter.shard: 1}


async def test_a_dead_letter_in_the_old_layout_is_listed_and_replayed_as_its_record(
    saver: DualSaver,
) -> None:
    thread = f"old-{uuid.uuid4()}"
    (entry,) = await dead_letter_good_records(saver, thread, 1)
    assert entry.record is not None
    dead = saver.flusher.outbox.dead_letter_stream(saver.hot.shard_of(thread))
    client = await raw(saver)
    await client.delete(dead)
    meta = saver.hot.thread_keys(thread).meta
    await client.hincrby(meta, "pending", -1)  # what dead-lettering did back then
    await client.xadd(dead, {"id": entry.id, "reason": "old", "r": pack_record(entry.record)})

    letters = DeadLetters(saver.hot)
    (letter,) = await letters.newest()
    assert (letter.kind, letter.thread_id, letter.entry_id) == ("checkpoint", thread, entry.id)
    await letters.replay([letter])
    assert (await saver.hot.athread_info(thread))["pending"] == 1  # counted pending again
    # Back as the record it held; it carries no authentication tag (old entries had
    # none), so an outbox that requires one dead-letters it again rather than apply it.
    assert await outbox_fields(saver, entry.stream) == [{b"r": pack_record(entry.record)}]


# -- purge ------------------------------------------------------------------------------


async def test_purging_a_record_gives_it_up_and_lets_its_thread_expire(
    saver: DualSaver, pg_dsn: str
) -> None:
    thread = f"purge-{uuid.uuid4()}"
    await dead_letter_good_records(saver, thread, 2)
    letters = DeadLetters(saver.hot)
    first, second = await letters.newest()
    assert await letters.purge([first]) == 1
    info = await saver.hot.athread_info(thread)
    assert info["pending"] == 1 and set(key_ttls(info)) == {-1}
    assert await letters.purge_all(await letters.marks()) == 1
    info = await saver.hot.athread_info(thread)
    assert info["pending"] == 0 and all(ttl > 0 for ttl in key_ttls(info))
    assert await letters.purge([second]) == 0  # gone already
    assert await durable_ids(pg_dsn, thread) == []


async def test_a_sweep_leaves_letters_that_arrive_after_it_started(saver: DualSaver) -> None:
    await add_bogus(saver)
    await saver.aflush()
    letters = DeadLetters(saver.hot)
    marks = await letters.marks()
    await add_bogus(saver)
    await saver.aflush()
    assert await letters.purge_all(marks) == 1
    assert sum((await letters.counts()).values()) == 1


# -- the cap ----------------------------------------------------------------------------


async def fill_dead_letters(saver: DualSaver, shard: int, count: int) -> None:
    """``count`` dead letters in a shard, written directly (fast)."""
    queue = saver.flusher.outbox
    dead, outbox = queue.dead_letter_stream(shard), queue.streams[shard]
    async with (await raw(saver)).pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.xadd(
                dead, {"id": f"1-{n}", "stream": outbox, "reason": "filler", "at": "1", "r": "x"}
            )
        await pipe.execute()


async def test_at_the_cap_an_entry_stays_queued_and_pending_and_an_error_is_logged(
    saver: DualSaver, caplog: pytest.LogCaptureFixture
) -> None:
    stream, entry_id = await add_bogus(saver, shard=2)
    await fill_dead_letters(saver, 2, DEAD_LETTER_CAP)
    with caplog.at_level(logging.ERROR, logger="langgraph_dualsaver"):
        await saver.flusher.run_once()
    assert any("is full" in r.getMessage() and entry_id in r.getMessage() for r in caplog.records)
    client = await raw(saver)
    assert await client.xlen(saver.flusher.outbox.dead_letter_stream(2)) == DEAD_LETTER_CAP
    assert await outbox_fields(saver, stream) == [BOGUS]  # nothing lost, nothing trimmed
    pending = await client.xpending_range(stream, "dualsaver-flushers", "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [entry_id]
    with pytest.raises(StoreUnavailableError, match="did not drain"):
        await saver.aflush(timedelta(milliseconds=300))  # a flush does not pretend

    letters = DeadLetters(saver.hot)
    await letters.purge(await letters.newest(1))
    again = Flusher(saver.hot, saver.durable, consumer=saver.flusher.consumer)
    await again.run_once()  # its own pending entries first: the stuck one
    assert await outbox_fields(saver, stream) == []
    (newest,) = await letters.newest(1)
    assert newest.entry_id == entry_id and dict(newest.fields) == BOGUS


async def test_the_cap_is_per_shard_and_a_caller_can_set_it(saver: DualSaver) -> None:
    streams = [saver.flusher.outbox.streams[shard] for shard in (0, 0, 0, 1)]
    client = await raw(saver)
    entries = [
        Entry(s, (await client.xadd(s, dict(BOGUS))).decode(), None, fields=BOGUS) for s in streams
    ]
    outbox = saver.flusher.outbox
    assert await outbox.dead_letter_entries(entries, "capped", cap=2) == [True, True, False, True]
    assert await DeadLetters(saver.hot).counts() == {
        **{s: 0 for s in range(saver.hot.shards)},
        0: 2,
        1: 1,
    }
    assert await client.xlen(saver.flusher.outbox.streams[0]) == 1


def test_status_warns_from_eighty_percent_of_the_cap() -> None:
    assert near_cap({0: 7_999, 1: 0}, 10_000) == []
    (warning,) = near_cap({0: 8_000, 1: 3}, 10_000)
    assert "shard 0's dead-letter stream is at 80% of the cap (8,000 of 10,000)" in warning
    (full,) = near_cap({4: 10}, 10)
    assert "shard 4's dead-letter stream is full" in full


# -- Redis Cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    with valkey_cluster(masters=3) as nodes:
        yield nodes[0].url


async def test_dead_letters_move_replay_and_purge_atomically_on_a_cluster(
    cluster_url: str,
) -> None:
    async with RedisHotSaver.from_conn_string(
        cluster_url, cluster=True, prefix=f"dl{uuid.uuid4().hex[:6]}", outbox=True
    ) as hot:
        client = await hot.aclient()
        outbox = Outbox.of(hot, "test")
        await outbox.ensure_group()
        for stream in outbox.streams:
            await client.xadd(stream, dict(BOGUS))
        entries = await outbox.read(10, own_pending=False)
        assert await outbox.dead_letter_entries(entries, "poison") == [True] * hot.shards
        letters = DeadLetters(hot)
        assert set((await letters.counts()).values()) == {1}
        found = await letters.newest()
        replayed = await letters.replay(found[: hot.shards // 2])
        assert all(replayed)
        assert await letters.purge_all(await letters.marks()) == hot.shards - hot.shards // 2
        assert sum((await letters.counts()).values()) == 0
        assert await outbox.length() == hot.shards // 2
        assert [list(e.fields.items()) for e in await outbox.read(10, own_pending=False)] == [
            list(BOGUS.items())
        ] * (hot.shards // 2)
