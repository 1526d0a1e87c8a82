"""A deleted thread used again keeps everything written after the delete: a tombstone
replayed late (a leftover flusher, a reclaimed entry, a delete made while Redis was
down) removes only what came before it, and the new thread's hot copy waits for its own
records before it may expire."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from langgraph_dualsaver.chain.flusher import Flusher, FlushSettings
from langgraph_dualsaver.chain.saver import MODES, DualSaver
from langgraph_dualsaver.embedded import EmbeddedValkey
from langgraph_dualsaver.settings import Timeouts
from tests.helpers import config, durable_ids, ids_of, put_chain
from tests.servers import valkey_server

SCRIPTS = Path(__file__).parent / "scripts"
FAST_CLAIM = FlushSettings(claim_idle=timedelta(milliseconds=200))


@pytest.fixture
def valkey() -> Iterator[EmbeddedValkey]:
    with valkey_server() as server:
        yield server


async def tombstone_position(dsn: str, thread_id: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT deleted_seq FROM dualsaver_tombstones WHERE thread_id = $1", thread_id
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_tombstone_replayed_after_the_thread_is_used_again_removes_nothing_new(
    mode: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread = f"reuse-{uuid.uuid4()}"
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, mode=mode, prefix=redis_prefix, background_flush=False
    ) as saver:
        await saver.asetup()
        await put_chain(saver, thread, 3)
        await saver.aflush()
        await saver.adelete_thread(thread)
        deleted_at = await tombstone_position(pg_dsn, thread)
        again = await put_chain(saver, thread, 2)  # "reset conversation": same thread_id
        await saver.aflush()
        # What a leftover or reclaimed delete entry does when it is applied again, late:
        await saver.durable.adelete_thread(thread, tombstone_seq=deleted_at)
        await Flusher(saver.hot, saver.durable, key=await saver._key()).drain()
        assert await durable_ids(pg_dsn, thread) == ids_of(again)
        await saver.hot.aevict_thread(thread)  # the hot copy expires: PostgreSQL answers
        latest = await saver.aget_tuple(config(thread))
        assert latest is not None and latest.config == again[-1]


async def test_a_delete_reclaimed_from_a_killed_flusher_spares_the_thread_used_since(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread = f"reclaim-{uuid.uuid4()}"
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False, flush=FAST_CLAIM
    ) as saver:
        await saver.asetup()
        await put_chain(saver, thread, 3)
        await saver.aflush()
        # The application dies right after its Redis delete: the tombstone is queued,
        # and a flush worker takes it, commits it, and is SIGKILLed before its XACK.
        await saver.hot.adelete_thread(thread, key=await saver._key())
        worker = subprocess.run(
            [sys.executable, str(SCRIPTS / "dual_flusher_killed.py"), redis_url, pg_dsn,
             "after_commit", redis_prefix],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert worker.returncode == -signal.SIGKILL, worker.stderr
        assert await durable_ids(pg_dsn, thread) == []
        again = await put_chain(saver, thread, 2)
        await saver.aflush()  # reclaims the dead worker's tombstone and applies it again
        assert await saver.alag() == 0
        assert await durable_ids(pg_dsn, thread) == ids_of(again)


@pytest.mark.parametrize("mode", MODES)
async def test_a_delete_while_redis_is_down_skips_no_write_made_after_it(
    mode: str, valkey: EmbeddedValkey, pg_dsn: str
) -> None:
    thread = f"down-delete-{uuid.uuid4()}"
    fast = Timeouts(connect=timedelta(milliseconds=500), command=timedelta(milliseconds=500))
    async with DualSaver.from_conn_string(
        valkey.url, pg_dsn, mode=mode, timeouts=fast, background_flush=False
    ) as saver:
        await saver.asetup()
        before = await put_chain(saver, thread, 2)  # write_behind: still queued in Redis
        valkey.signal(signal.SIGSTOP)
        try:
            await saver.adelete_thread(thread)  # degraded: PostgreSQL only
            [while_down] = await put_chain(saver, thread, 1)  # degraded: PostgreSQL only
        finally:
            valkey.signal(signal.SIGCONT)
        saver._health.retry_at = 0.0  # skip the circuit breaker's cooldown
        after = await put_chain(saver, thread, 2, start=while_down)  # through Redis again
        await saver.aflush()
        durable = await durable_ids(pg_dsn, thread)
        assert durable == ids_of([while_down, *after])  # nothing acknowledged was skipped
        assert not set(durable) & set(ids_of(before))  # the delete still won
        listed = [t.config for t in await asyncio.to_thread(list, saver.list(config(thread)))]
        assert listed == [*reversed(after), while_down]
        stats = await saver.astats()
        assert stats.dead_letters == 0
        assert stats.refused == (len(before) if mode == "write_behind" else 0)


async def test_a_thread_used_again_keeps_its_hot_copy_until_its_own_records_are_durable(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread = f"generation-{uuid.uuid4()}"
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False, ttl=timedelta(hours=1)
    ) as saver:
        await saver.asetup()
        old = await put_chain(saver, thread, 3)  # queued, not flushed
        await saver.adelete_thread(thread)
        await put_chain(saver, thread, 2)
        assert (await saver.hot.athread_info(thread))["pending"] == 2
        # A flusher that takes only the old incarnation's entries: acknowledging them
        # must not count against the new thread's pending records.
        small = Flusher(saver.hot, saver.durable, FlushSettings(batch=len(old)),
                        key=await saver._key())  # fmt: skip
        assert await small.run_once() == len(old)
        info = await saver.hot.athread_info(thread)
        assert info["pending"] == 2
        assert set(info["keys"].values()) <= {-1, -2}  # no expiry while records are queued
        await saver.aflush()
        info = await saver.hot.athread_info(thread)
        assert info["pending"] == 0
        assert all(ttl > 0 for ttl in info["keys"].values() if ttl != -2)
