"""The chain's invariants (README, "What holds"), each on real Valkey and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from langgraph_dualsaver.chain.flusher import Flusher, FlushSettings
from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.errors import UnsafeRedisConfigError
from tests.helpers import (
    checkpoint,
    config,
    durable_ids,
    eventually,
    ids_of,
    put_chain,
)
from tests.servers import valkey_server

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture
async def behind(redis_url: str, pg_dsn: str, redis_prefix: str) -> AsyncIterator[DualSaver]:
    """write_behind with the background flusher off: PostgreSQL moves only on flush()."""
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, mode="write_behind", background_flush=False,
        ttl=timedelta(seconds=1),
    ) as saver:  # fmt: skip
        await saver.asetup()
        yield saver


@pytest.mark.parametrize("mode", ["write_behind", "write_through"])
async def test_read_your_writes_from_another_process(
    mode: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread = f"ryw-{uuid.uuid4()}"
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, mode=mode
    ) as saver:
        await saver.asetup()
        saved = await put_chain(saver, thread, 3)
        script = str(SCRIPTS / "dual_read.py")
        out = subprocess.run(
            [sys.executable, script, redis_url, pg_dsn, redis_prefix, thread],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    seen = json.loads(out.stdout)
    assert seen["latest"] == ids_of(saved)[-1]
    assert seen["listed"] == list(reversed(ids_of(saved)))


async def test_write_through_put_returns_after_the_postgres_commit(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread = f"wt-{uuid.uuid4()}"
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, mode="write_through", background_flush=False
    ) as saver:
        await saver.asetup()
        saved = await put_chain(saver, thread, 4)
        assert await durable_ids(pg_dsn, thread) == ids_of(saved)
        assert (await saver.astats()).outbox_length == 0


async def test_checkpoint_leaves_redis_by_ttl_only_after_it_is_durable(
    behind: DualSaver, pg_dsn: str
) -> None:
    thread = f"ttl-{uuid.uuid4()}"
    saved = await put_chain(behind, thread, 2)
    info = await behind.hot.athread_info(thread)
    assert info["pending"] == 2
    present = {k: ttl for k, ttl in info["keys"].items() if ttl != -2}
    assert present and all(ttl == -1 for ttl in present.values()), info  # none expire yet
    assert await durable_ids(pg_dsn, thread) == []

    await behind.aflush()
    assert await durable_ids(pg_dsn, thread) == ids_of(saved)
    info = await behind.hot.athread_info(thread)
    present = {k: ttl for k, ttl in info["keys"].items() if ttl != -2}
    assert present and all(0 < ttl <= 1000 for ttl in present.values()), info

    async def expired() -> bool:
        ttls = (await behind.hot.athread_info(thread))["keys"].values()
        return all(ttl == -2 for ttl in ttls)

    await eventually(expired, what="hot keys expiring after the flush")
    found = await behind.aget_tuple(config(thread))
    assert found is not None and found.config["configurable"]["checkpoint_id"] == ids_of(saved)[-1]


async def test_prune_removes_from_redis_only_what_postgres_holds(
    behind: DualSaver, pg_dsn: str
) -> None:
    thread = f"prune-{uuid.uuid4()}"
    saved = await put_chain(behind, thread, 3)
    await behind.aprune([thread], strategy="keep_latest")
    # prune flushed first: the latest is durable and still hot; nothing was lost on the way
    assert await durable_ids(pg_dsn, thread) == ids_of(saved)[-1:]
    hot = await behind.hot.aget_tuple(config(thread))
    assert hot is not None and hot.config["configurable"]["checkpoint_id"] == ids_of(saved)[-1]


async def test_delete_thread_wins_over_a_queued_flush(behind: DualSaver, pg_dsn: str) -> None:
    thread, other = f"del-{uuid.uuid4()}", f"keep-{uuid.uuid4()}"
    await put_chain(behind, thread, 3)
    kept = await put_chain(behind, other, 1)
    # A second flusher takes the entries (as a worker in another process would) ...
    racer = Flusher(behind.hot, behind.durable)
    outbox = racer.outbox
    taken = await outbox.read(100, own_pending=False)
    assert {e.thread_id for e in taken} == {thread, other}
    # ... the thread is deleted while they are in flight ...
    await behind.adelete_thread(thread)
    # ... and the late flush brings nothing of it back.
    await racer._apply(taken)
    await behind.aflush()
    assert await durable_ids(pg_dsn, thread) == []
    assert await behind.aget_tuple(config(thread)) is None
    assert [t async for t in behind.alist(config(thread))] == []
    assert await durable_ids(pg_dsn, other) == ids_of(kept)


async def test_a_thread_written_again_after_delete_is_kept(behind: DualSaver, pg_dsn: str) -> None:
    thread = f"redo-{uuid.uuid4()}"
    await put_chain(behind, thread, 2)
    await behind.adelete_thread(thread)
    again = await put_chain(behind, thread, 1)
    await behind.aflush()
    assert await durable_ids(pg_dsn, thread) == ids_of(again)


async def test_reads_fall_back_to_postgres_and_backfill_redis(behind: DualSaver) -> None:
    thread = f"cold-{uuid.uuid4()}"
    saved = await put_chain(behind, thread, 3)
    await behind.aflush()
    await behind.hot.aevict_thread(thread)  # as TTL expiry would
    before = await behind.astats()

    cold = await behind.aget_tuple(config(thread))
    assert cold is not None and cold.config["configurable"]["checkpoint_id"] == ids_of(saved)[-1]
    after_cold = await behind.astats()
    assert after_cold.hot_misses == before.hot_misses + 1
    assert after_cold.backfills == before.backfills + 1

    hot = await behind.aget_tuple(config(thread))
    assert hot is not None and hot.checkpoint == cold.checkpoint
    after_hot = await behind.astats()
    assert after_hot.hot_hits == after_cold.hot_hits + 1
    # the next step of the thread is hot again
    nxt = await behind.aput(
        hot.config, checkpoint("next", 9), {"source": "loop", "step": 9}, {"x": 9}
    )
    assert (await behind.hot.aget_tuple(config(thread))).config == nxt


async def test_list_is_the_union_of_both_tiers_newest_first(behind: DualSaver) -> None:
    thread = f"union-{uuid.uuid4()}"
    first = await put_chain(behind, thread, 3)
    await behind.aflush()
    await behind.hot.aevict_thread(thread)  # these three live only in PostgreSQL now
    rest = await put_chain(behind, thread, 3, start=first[-1])  # these only in Redis
    everything = list(reversed(ids_of(first + rest)))

    listed = [t.config["configurable"]["checkpoint_id"] async for t in behind.alist(config(thread))]
    assert listed == everything
    limited = [t.checkpoint["id"] async for t in behind.alist(config(thread), limit=4)]
    assert limited == everything[:4]
    before = [
        t.checkpoint["id"] async for t in behind.alist(config(thread), before=rest[0], limit=2)
    ]
    assert before == everything[3:5]
    filtered = [t.checkpoint["id"] async for t in behind.alist(config(thread), filter={"step": 1})]
    assert filtered == [ids_of(rest)[1], ids_of(first)[1]]


@dataclass
class Invoice:
    amount: float


async def test_with_allowlist_reaches_both_inner_savers(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    strict = JsonPlusSerializer(allowed_msgpack_modules=None)
    thread = f"allow-{uuid.uuid4()}"
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, serde=strict, background_flush=False
    ) as saver:
        await saver.asetup()
        ckpt = checkpoint(Invoice(650.0), 1)
        await saver.aput(config(thread), ckpt, {"source": "loop", "step": 0}, {"x": 1})
        await saver.aflush()
        blocked = await saver.aget_tuple(config(thread))
        assert blocked.checkpoint["channel_values"]["x"] == {"amount": 650.0}

        allowed = saver.with_allowlist([(__name__, "Invoice")])
        assert allowed is not saver
        hot = await allowed.aget_tuple(config(thread))  # read from Redis
        assert hot.checkpoint["channel_values"]["x"] == Invoice(650.0)
        durable = await allowed.durable.aget_tuple(config(thread))  # from PostgreSQL
        assert durable.checkpoint["channel_values"]["x"] == Invoice(650.0)


async def test_setup_refuses_an_eviction_policy_that_could_drop_the_outbox(pg_dsn: str) -> None:
    with valkey_server(extra_args=["--maxmemory-policy", "allkeys-lru"]) as server:
        async with DualSaver.from_conn_string(server.url, pg_dsn) as saver:
            with pytest.raises(UnsafeRedisConfigError, match="noeviction"):
                await saver.asetup()
        client = aioredis.Redis.from_url(server.url)
        try:
            assert await client.dbsize() == 0  # refused before writing anything
        finally:
            await client.aclose()


async def test_a_flusher_with_min_age_leaves_young_entries_alone(
    behind: DualSaver, pg_dsn: str
) -> None:
    """write_through's background flusher: it never writes a record the put is still
    committing itself (which a prune right after could otherwise see come back)."""
    thread = f"young-{uuid.uuid4()}"
    saved = await put_chain(behind, thread, 1)
    patient = Flusher(behind.hot, behind.durable, FlushSettings(min_age=timedelta(hours=1)))
    assert await patient.run_once() == 0
    assert await durable_ids(pg_dsn, thread) == []
    assert await behind.alag() == 1
    eager = Flusher(behind.hot, behind.durable, FlushSettings(claim_idle=timedelta(0)))
    await eager.drain()
    assert await durable_ids(pg_dsn, thread) == ids_of(saved)


async def test_aclose_stops_the_background_flusher_a_sync_run_started(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    saver = DualSaver.from_conn_string(redis_url, pg_dsn, prefix=redis_prefix)
    await saver.asetup()
    await asyncio.to_thread(saver.put, config("sync-run"), checkpoint(1, 1), {}, {"x": 1})
    tasks = [background.task for background in saver._background.values()]
    assert tasks  # the put started a flusher on the sync bridge's loop
    await saver.aclose()

    async def stopped() -> bool:
        return all(task.done() for task in tasks)

    await eventually(stopped, what="the bridge loop's flusher stopped")


async def test_an_interrupt_makes_the_paused_state_durable_even_if_its_put_lands_after(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    """LangGraph saves checkpoints in the background: the put of the checkpoint a run
    pauses at can land after the interrupt's write. write_behind flushes it too."""
    from langgraph.checkpoint.serde.types import INTERRUPT

    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False
    ) as saver:
        await saver.asetup()
        [first] = await put_chain(saver, "paused", 1)
        await saver.aput_writes(first, [(INTERRUPT, "approve?")], "task-1")
        assert await durable_ids(pg_dsn, "paused") == ids_of([first])
        [late] = await put_chain(saver, "paused", 1, start=first)  # lands after
        assert await durable_ids(pg_dsn, "paused") == ids_of([first, late])
        [after] = await put_chain(saver, "paused", 1, start=late)  # the flag is spent
        assert await durable_ids(pg_dsn, "paused") == ids_of([first, late])
        assert after is not None
