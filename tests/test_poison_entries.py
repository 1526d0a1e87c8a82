"""One bad entry never stops the queue: whatever cannot be decoded, authenticated,
stored in time or stored at all goes to the dead-letter stream, the rest flows, and a
dead-lettered record stays hot (it never expires) until an operator acts."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis

from langgraph_dualsaver import DualSaver, Limits, PostgresDurableSaver, RedisHotSaver
from langgraph_dualsaver.chain.flusher import Flusher, FlushSettings, _by_bytes
from langgraph_dualsaver.chain.outbox import Entry
from langgraph_dualsaver.settings import Timeouts
from tests.helpers import checkpoint, config, durable_ids, eventually, ids_of, put_chain

ONE_TRY = FlushSettings(max_deliveries=1)


@pytest.fixture
async def saver(redis_url: str, pg_dsn: str, redis_prefix: str) -> AsyncIterator[DualSaver]:
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False, flush=ONE_TRY
    ) as opened:
        await opened.asetup()
        yield opened


async def outbox_of(saver: DualSaver, thread_id: str) -> str:
    return saver.hot.thread_keys(thread_id).outbox


async def dead_letter_reasons(saver: DualSaver) -> list[str]:
    client = await saver.hot.aclient()
    reasons = []
    outbox = saver.flusher.outbox
    for stream in outbox.streams:
        for _, fields in await client.xrange(outbox.dead_letter_stream(stream)):
            reasons.append(fields[b"reason"].decode())
    return reasons


@pytest.mark.parametrize(
    "fields",
    [
        {"r": b"\xc1 not msgpack"},
        {"d": b"\xff\xfe not utf-8"},
        {"d": "a\udc80".encode("utf-8", "surrogatepass")},
        {"something": b"else"},
        {"r": b"\x93\x01\x02\x03"},  # msgpack, but not a record
    ],
    ids=["garbage record", "undecodable thread", "surrogate thread", "unknown fields", "no record"],
)
async def test_an_entry_someone_else_wrote_is_dead_lettered_and_the_rest_flows(
    saver: DualSaver, pg_dsn: str, fields: dict[str, bytes]
) -> None:
    thread = f"good-{uuid.uuid4()}"
    client = await saver.hot.aclient()
    await client.xadd(await outbox_of(saver, thread), fields)  # first in the queue
    saved = await put_chain(saver, thread, 2)
    await saver.aflush()
    assert await durable_ids(pg_dsn, thread) == ids_of(saved)
    assert (await saver.astats()).dead_letters == 1
    assert await saver.alag() == 0


async def test_a_background_flusher_survives_a_poison_entry_and_keeps_flushing(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread = f"background-{uuid.uuid4()}"
    async with DualSaver.from_conn_string(redis_url, pg_dsn, prefix=redis_prefix) as saver:
        await saver.asetup()
        client = await saver.hot.aclient()
        await client.xadd(await outbox_of(saver, thread), {"d": b"\xff"})
        saved = await put_chain(saver, thread, 3)

        async def durable() -> bool:
            return await durable_ids(pg_dsn, thread) == ids_of(saved)

        await eventually(durable, what="the background flusher flushed past the poison entry")
        assert (await saver.astats()).dead_letters == 1


async def test_a_record_postgres_rejects_is_dead_lettered_and_stays_hot(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    """Limits raised past PostgreSQL's (a Redis-sized thread id): the record is fine in
    Redis, PostgreSQL's index refuses it. It must stay visible, never expire."""
    thread = secrets.token_urlsafe(2700)  # 3,600 bytes of barely compressible text
    roomy = Limits(max_id_bytes=4000, max_key_bytes=16000)
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False, flush=ONE_TRY,
        limits=roomy, ttl=timedelta(hours=1),
    ) as saver:  # fmt: skip
        await saver.asetup()
        other = f"other-{uuid.uuid4()}"
        await saver.aput(config(thread), checkpoint("v", 1), {}, {"x": 1})
        saved = await put_chain(saver, other, 1)
        await saver.aflush()
        assert await durable_ids(pg_dsn, other) == ids_of(saved)  # the rest flowed
        assert (await saver.astats()).dead_letters == 1
        assert any("PostgreSQL rejected" in r for r in await dead_letter_reasons(saver))
        info = await saver.hot.athread_info(thread)
        assert info["pending"] == 1  # still counted: not durable
        assert set(info["keys"].values()) <= {-1, -2}  # no expiry on any of its keys
        assert await saver.aget_tuple(config(thread)) is not None


async def test_a_value_postgres_cannot_take_in_time_is_retried_then_dead_lettered(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    """A thread whose PostgreSQL lock is held elsewhere times out on every flush while
    PostgreSQL itself answers: its entry costs max_deliveries attempts, nothing more,
    and the entries queued behind it are flushed meanwhile."""
    stuck, fine = f"stuck-{uuid.uuid4()}", f"fine-{uuid.uuid4()}"
    quick = Timeouts(command=timedelta(seconds=1))
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False, timeouts=quick,
        flush=FlushSettings(max_deliveries=2),
    ) as saver:  # fmt: skip
        await saver.asetup()
        blocker = await asyncpg.connect(pg_dsn)
        try:
            await blocker.execute("BEGIN")
            await blocker.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", stuck)
            [held] = await put_chain(saver, stuck, 1)
            saved = await put_chain(saver, fine, 2)
            flusher = Flusher(saver.hot, saver.durable, saver.flusher.settings,
                              key=await saver._key())  # fmt: skip
            assert await flusher.run_once() == 2  # the fine thread went through
            assert await durable_ids(pg_dsn, fine) == ids_of(saved)
            assert await saver.alag() == 1  # the stuck one is retried, not dropped
            assert await flusher.run_once() == 1  # second failure: dead-lettered
        finally:
            await blocker.close()
        assert await durable_ids(pg_dsn, stuck) == []
        assert await saver.alag() == 0
        [reason] = await dead_letter_reasons(saver)
        assert "failed 2 times" in reason and "did not answer" in reason
        assert (await saver.aget_tuple(config(stuck))).config == held  # still hot


async def test_a_large_value_under_the_cap_is_flushed_within_its_own_time_budget(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    """48 MiB with a 0.5 s PostgreSQL command timeout: the flush gets the timeout plus
    the bytes at the slowest acceptable rate, so a large value is not mistaken for an
    outage. (Redis keeps its default timeout: this is about the flush.)"""
    big, small = f"big-{uuid.uuid4()}", f"small-{uuid.uuid4()}"
    quick = Timeouts(command=timedelta(milliseconds=500))
    hot = RedisHotSaver(url=redis_url, prefix=redis_prefix, outbox=True)
    durable = PostgresDurableSaver(dsn=pg_dsn, timeouts=quick)
    async with DualSaver(hot, durable, background_flush=False) as saver:
        await saver.asetup()
        value = secrets.token_bytes(48 * 1024 * 1024)
        [saved_big] = [await saver.aput(config(big), checkpoint(value, 1), {}, {"x": 1})]
        saved_small = await put_chain(saver, small, 2)
        await saver.aflush()
        assert await durable_ids(pg_dsn, big) == ids_of([saved_big])
        assert await durable_ids(pg_dsn, small) == ids_of(saved_small)
        assert (await saver.astats()).dead_letters == 0


def entry(size: int) -> Entry:
    return Entry("s", "1-0", None, fields={b"r": b"x" * size})


@pytest.mark.pure
def test_flush_batches_are_bounded_by_bytes_and_a_large_entry_goes_alone() -> None:
    sizes = [[len(e.fields[b"r"]) for e in batch]
             for batch in _by_bytes([entry(n) for n in (4, 4, 4, 20, 1, 1)], 10)]  # fmt: skip
    assert sizes == [[4, 4], [4], [20], [1, 1]]


async def test_a_forged_delete_of_a_durable_thread_is_refused(
    saver: DualSaver, pg_dsn: str
) -> None:
    thread = f"victim-{uuid.uuid4()}"
    saved = await put_chain(saver, thread, 2)
    await saver.aflush()
    client = await saver.hot.aclient()
    await client.xadd(await outbox_of(saver, thread), {"d": thread.encode()})  # no tag
    await client.xadd(await outbox_of(saver, thread), {"d": thread.encode(), "m": b"0" * 16})
    await saver.aflush()
    assert await durable_ids(pg_dsn, thread) == ids_of(saved)
    unauthenticated = "unauthenticated entry (its tag does not match the key)"
    assert await dead_letter_reasons(saver) == [unauthenticated] * 2


async def test_a_copy_of_a_genuine_delete_added_later_does_not_delete_again(
    saver: DualSaver, pg_dsn: str
) -> None:
    thread = f"copied-{uuid.uuid4()}"
    await put_chain(saver, thread, 1)
    await saver.aflush()
    tombstone = await saver.hot.adelete_thread(thread, key=await saver._key())
    client = await saver.hot.aclient()
    [(_, genuine)] = await client.xrange(await outbox_of(saver, thread), tombstone, tombstone)
    await saver.aflush()  # the genuine delete, applied
    again = await put_chain(saver, thread, 2)
    await saver.aflush()
    await client.xadd(await outbox_of(saver, thread), genuine)  # the same fields, later
    await saver.aflush()
    assert await durable_ids(pg_dsn, thread) == ids_of(again)
    assert (await saver.astats()).dead_letters == 1


async def test_a_forged_record_is_never_written_to_postgres(
    saver: DualSaver, redis_url: str, pg_dsn: str
) -> None:
    thread = f"forged-{uuid.uuid4()}"
    elsewhere = f"{saver.hot.prefix}-other"
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=elsewhere, background_flush=False,
        outbox_key=secrets.token_hex(32),
    ) as forger:  # fmt: skip
        await forger.asetup()
        await put_chain(forger, thread, 1)  # a record signed with another key
        client = await forger.hot.aclient()
        stream = forger.hot.thread_keys(thread).outbox
        [(_, fields)] = await client.xrange(stream)
    client = await saver.hot.aclient()
    await client.xadd(await outbox_of(saver, thread), fields)
    await saver.aflush()
    assert await durable_ids(pg_dsn, thread) == []
    assert (await saver.astats()).dead_letters == 1


async def test_the_outbox_key_is_shared_through_postgres_and_rotates(
    redis_url: str, pg_dsn: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread = f"rotate-{uuid.uuid4()}"
    monkeypatch.delenv("DUALSAVER_OUTBOX_KEY", raising=False)
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False
    ) as first:
        await first.asetup()
        old = (await first._key()).current
        signed_with_old = await put_chain(first, thread, 1)
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False
    ) as second:
        await second.asetup()
        assert (await second._key()).current == old  # generated once, read by every process
    new = secrets.token_hex(32)
    monkeypatch.setenv("DUALSAVER_OUTBOX_KEY", f"{new},{old.hex()}")
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False
    ) as rotated:
        await rotated.asetup()
        signed_with_new = await put_chain(rotated, thread, 1, start=signed_with_old[0])
        await rotated.aflush()  # entries under the previous key still authenticate
        assert await durable_ids(pg_dsn, thread) == ids_of(signed_with_old + signed_with_new)
        assert (await rotated.astats()).dead_letters == 0


async def test_entries_queued_by_a_version_without_authentication_are_flushed_on_upgrade(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    from langgraph_dualsaver.hot.saver import RedisHotSaver

    thread = f"legacy-{uuid.uuid4()}"
    async with RedisHotSaver.from_conn_string(redis_url, prefix=redis_prefix, outbox=True) as old:
        await old.asetup()
        [legacy] = await put_chain(old, thread, 1)  # queued with no tag, as before
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False
    ) as upgraded:
        await upgraded.asetup()
        assert await durable_ids(pg_dsn, thread) == ids_of([legacy])
        assert await upgraded.alag() == 0


async def test_a_raw_client_sees_the_tag_on_every_entry(saver: DualSaver, redis_url: str) -> None:
    thread = f"tagged-{uuid.uuid4()}"
    await put_chain(saver, thread, 1)
    client = aioredis.Redis.from_url(redis_url)
    try:
        [(_, fields)] = await client.xrange(await outbox_of(saver, thread))
    finally:
        await client.aclose()
    assert set(fields) == {b"r", b"m"} and len(fields[b"m"]) == 16


async def test_stats_count_each_flushed_entry_once(saver: DualSaver) -> None:
    await put_chain(saver, f"count-{uuid.uuid4()}", 3)
    assert await saver.aflush() == 3
    assert (await saver.astats()).flushed == 3
