"""RedisHotSaver behaviour beyond the conformance suite: clients and loops, setup checks,
half-evicted threads, listing, DeltaChannel history in pages, copies in outbox mode,
backfill and eviction. What every saver kind does (bad input, DeltaChannel history,
prune, copy, delete_for_runs) is in ``tests/contract``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from redis.asyncio import Redis

from langgraph_dualsaver.chain.outbox import Outbox
from langgraph_dualsaver.durable.saver import records_tuple
from langgraph_dualsaver.errors import (
    CheckpointTooLargeError,
    DualSaverError,
    UnsafeRedisConfigError,
)
from langgraph_dualsaver.hot import admin as redis_admin
from langgraph_dualsaver.hot import keys as K
from langgraph_dualsaver.hot.saver import RedisHotSaver
from langgraph_dualsaver.records import (
    Limits,
    WritesRecord,
    checkpoint_record,
    unpack_record,
    writes_record,
)
from tests.helpers import DELTA_ITEMS, config, delta_thread
from tests.servers import valkey_server


async def put(
    saver: BaseCheckpointSaver,
    thread_id: str,
    values: dict[str, Any],
    versions: dict[str, Any],
    new_versions: dict[str, Any],
    parent: str | None = None,
    ns: str = "",
    **metadata: Any,
) -> Any:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = versions
    cfg = config(thread_id, ns=ns)
    if parent:
        cfg["configurable"]["checkpoint_id"] = parent
    return await saver.aput(cfg, checkpoint, metadata, new_versions)


@pytest.fixture
async def saver(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisHotSaver]:
    async with RedisHotSaver.from_conn_string(redis_url, prefix=redis_prefix) as opened:
        await opened.asetup()
        yield opened


# -- clients, loops and setup ------------------------------------------------------------


def test_one_saver_serves_sync_calls_and_two_event_loops(redis_url: str, redis_prefix: str) -> None:
    with RedisHotSaver.from_conn_string(redis_url, prefix=redis_prefix) as saver:
        saver.setup()
        first = asyncio.run(put(saver, "loops", {"x": 1}, {"x": "1"}, {"x": "1"}))
        found = asyncio.run(saver.aget_tuple(config("loops")))  # a second loop
        assert found is not None and found.config == first
        assert saver.get_tuple(config("loops")) == found  # and the sync bridge
        assert [t.config for t in saver.list(None)] == [first]


async def test_a_callers_client_is_used_and_never_closed(redis_url: str, redis_prefix: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        async with RedisHotSaver.from_conn_string(redis_url, prefix=redis_prefix) as _:
            pass
        saver = RedisHotSaver(client, prefix=redis_prefix)
        await saver.asetup()
        await put(saver, "owned", {}, {}, {})
        await saver.aclose()
        assert await client.ping()
        assert await client.exists(saver.thread_keys("owned").meta) == 1
    finally:
        await client.aclose()


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
async def test_setup_refuses_an_allkeys_eviction_policy(policy: str) -> None:
    with valkey_server(extra_args=["--maxmemory-policy", policy]) as server:
        async with RedisHotSaver.from_conn_string(server.url) as saver:
            with pytest.raises(UnsafeRedisConfigError, match=f"{policy}.*noeviction"):
                await saver.asetup()


async def test_setup_accepts_volatile_policies_and_servers_without_config(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with valkey_server(extra_args=["--maxmemory-policy", "volatile-lru"]) as server:
        async with RedisHotSaver.from_conn_string(server.url) as saver:
            await saver.asetup()
    with valkey_server(extra_args=["--rename-command", "CONFIG", '""']) as server:
        async with RedisHotSaver.from_conn_string(server.url) as saver:
            with caplog.at_level(logging.WARNING):
                await saver.asetup()
            assert "cannot read maxmemory-policy" in caplog.text
            await put(saver, "t", {}, {}, {})
            assert await saver.aget_tuple(config("t")) is not None


# -- half a thread ----------------------------------------------------------------------


@pytest.mark.parametrize("lost", ["blobs", "writes", "cp", "idx", "meta"])
async def test_a_thread_missing_a_key_reads_as_absent_never_as_half(
    saver: RedisHotSaver, raw: Any, lost: str
) -> None:
    first = await put(saver, "half", {"x": 1}, {"x": "1"}, {"x": "1"})
    await saver.aput_writes(first, [("x", 2)], "task")
    await put(saver, "whole", {"x": 1}, {"x": "1"}, {"x": "1"})
    raw.delete(getattr(saver.thread_keys("half"), lost))  # as an eviction would

    assert await saver.aget_tuple(config("half")) is None
    assert await saver.aget_tuple(first) is None
    assert [t async for t in saver.alist(config("half"))] == []
    listed = [t.config["configurable"]["thread_id"] async for t in saver.alist(None)]
    assert listed == ["whole"]
    assert saver.partial_reads >= (0 if lost == "meta" else 1)

    counted = saver.partial_reads  # the copy and the delta-channel walk read it too
    await saver.acopy_thread("half", "copy-of-half")
    assert await saver.aget_tuple(config("copy-of-half")) is None
    history = await saver.aget_delta_channel_history(config=first, channels=["x"])
    assert history == {"x": {"writes": []}}
    assert saver.partial_reads == counted + (0 if lost == "meta" else 2)

    # Writing the thread again starts it afresh: no leftover comes back.
    again = await put(saver, "half", {"x": 9}, {"x": "9"}, {"x": "9"})
    found = await saver.aget_tuple(config("half"))
    assert found is not None and found.config == again
    assert found.checkpoint["channel_values"] == {"x": 9} and found.pending_writes == []
    assert [t.config async for t in saver.alist(config("half"))] == [again]


# -- listing ------------------------------------------------------------------------------


async def test_list_across_threads_and_namespaces_newest_first(saver: RedisHotSaver) -> None:
    made = []
    for thread_id in ("a", "b"):
        for ns in ("", "child:1"):
            made.append(await put(saver, thread_id, {}, {}, {}, ns=ns, tag=f"{thread_id}{ns}"))
    ids = [m["configurable"]["checkpoint_id"] for m in made]

    everything = [t.config async for t in saver.alist(None)]
    assert everything == list(reversed(made))
    whole_thread = [t.config async for t in saver.alist({"configurable": {"thread_id": "a"}})]
    assert whole_thread == [made[1], made[0]]
    only_ns = [t.config async for t in saver.alist(config("a", ns="child:1"))]
    assert only_ns == [made[1]]
    before = [t.config async for t in saver.alist(None, before=config("x", checkpoint_id=ids[2]))]
    assert before == [made[1], made[0]]
    limited = [t.config async for t in saver.alist(None, limit=3, filter={"tag": "achild:1"})]
    assert limited == [made[1]]
    exact = config("b", ns="child:1", checkpoint_id=ids[3])
    assert [t.config async for t in saver.alist(exact)] == [made[3]]
    other_ns = config("b", ns="", checkpoint_id=ids[3])
    assert [t.config async for t in saver.alist(other_ns)] == []


async def test_list_pages_through_a_long_namespace(saver: RedisHotSaver) -> None:
    parent = None
    made = []
    for step in range(230):  # more than two pages of 100
        saved = await put(saver, "long", {}, {}, {}, parent=parent, step=step)
        parent = saved["configurable"]["checkpoint_id"]
        made.append(saved)
    listed = [t.config async for t in saver.alist(config("long"))]
    assert listed == list(reversed(made))
    odd = [t.metadata["step"] async for t in saver.alist(config("long"), filter={"step": 201})]
    assert odd == [201]
    page = [t.config async for t in saver.alist(config("long"), before=made[150], limit=120)]
    assert page == list(reversed(made[30:150]))


async def test_list_forgets_registered_threads_that_expired(saver: RedisHotSaver, raw: Any) -> None:
    await put(saver, "alive", {}, {}, {})
    old = time.time() - K.REGISTRY_GRACE_S - 1
    raw.zadd(saver.thread_keys("expired").registry, {"expired": old})
    raw.zadd(saver.thread_keys("just-created").registry, {"just-created": time.time()})
    assert [t.config["configurable"]["thread_id"] async for t in saver.alist(None)] == ["alive"]
    members = {m.decode() for key in saver.registry_keys() for m in raw.zrange(key, 0, -1)}
    assert members == {"alive", "just-created"}  # a fresh member is kept: its write may follow


async def test_threads_registered_by_an_earlier_version_are_listed_and_moved(
    saver: RedisHotSaver, raw: Any
) -> None:
    await put(saver, "old", {}, {}, {})
    tk = saver.thread_keys("old")
    raw.zrem(tk.registry, "old")
    legacy = K.registry_key(saver.prefix)
    raw.zadd(legacy, {"old": time.time()})  # where an earlier version registered it
    assert [t.config["configurable"]["thread_id"] async for t in saver.alist(None)] == ["old"]
    assert raw.zrange(legacy, 0, -1) == []
    assert raw.zrange(tk.registry, 0, -1) == [b"old"]


# -- DeltaChannel ---------------------------------------------------------------------------


async def test_delta_history_pages_through_the_chain_a_few_ancestors_per_call(
    saver: RedisHotSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_admin, "_CHAIN_STEPS", 2)  # tests/contract: one call
    graph = await delta_thread(saver, "delta")
    channels = ["items", "n", "log", "absent"]
    async for state in graph.aget_state_history(config("delta")):
        fast = await saver.aget_delta_channel_history(config=state.config, channels=channels)
        walk = await BaseCheckpointSaver.aget_delta_channel_history(
            saver, config=state.config, channels=channels
        )
        assert fast == walk, state.config
    latest = await saver.aget_delta_channel_history(config=config("delta"), channels=["items"])
    assert [w[2] for w in latest["items"]["writes"]] == [["i7"], ["i8"]]
    assert latest["items"]["seed"].value == DELTA_ITEMS[:-2]


async def test_copy_thread_in_outbox_mode_queues_blobs_before_their_checkpoints(
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    async with RedisHotSaver.from_conn_string(redis_url, prefix=redis_prefix, outbox=True) as s:
        first = await put(s, "src", {"x": 1}, {"x": "1"}, {"x": "1"})
        await s.aput_writes(first, [("x", 5)], "task")
        await put(s, "src", {"x": 1}, {"x": "1"}, {}, parent=first["configurable"]["checkpoint_id"])
        await s.acopy_thread("src", "dst")
        entries = [unpack_record(f[b"r"]) for _, f in raw.xrange(s.thread_keys("dst").outbox)]
        copied = [e for e in entries if e.thread_id == "dst"]
        assert [type(e).__name__ for e in copied] == [
            "CheckpointRecord", "WritesRecord", "CheckpointRecord"
        ]  # fmt: skip
        assert [b.channel for b in copied[0].blobs] == ["x"] and copied[2].blobs == ()
        assert (await s.athread_info("dst"))["pending"] == 3


# -- the chain's hooks: backfill, eviction ------------------------------------------------------


async def test_backfill_stores_records_as_they_are_and_refuses_ones_beyond_limits(
    saver: RedisHotSaver, raw: Any
) -> None:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"x": "v" * 100}
    checkpoint["channel_versions"] = {"x": "1"}
    head = checkpoint_record(saver.serde, saver.limits, config("t"), checkpoint, {}, {"x": "1"})
    at = config("t", checkpoint_id=head.checkpoint_id)
    writes = [
        w
        for task, path in (("a", "~2"), ("b", "~1"))
        for w in writes_record(saver.serde, saver.limits, at, [("x", task)], task, path).writes
    ]
    records = [head, WritesRecord("t", "", head.checkpoint_id, tuple(writes))]

    with pytest.raises(CheckpointTooLargeError):
        await saver.abackfill(records, Limits(max_value_bytes=50))
    assert raw.exists(*saver.thread_keys("t").data) == 0

    await saver.abackfill(records)
    found = await saver.aget_tuple(config("t"))
    assert found == records_tuple(saver.serde, records)
    assert found is not None and [w[0] for w in found.pending_writes] == ["b", "a"]  # by path
    assert (await saver.athread_info("t"))["pending"] == 0


async def test_evicting_drops_durable_hot_copies_without_tombstones(
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    async with RedisHotSaver.from_conn_string(redis_url, prefix=redis_prefix, outbox=True) as s:
        outbox = Outbox.of(s, "test")
        await outbox.ensure_group()
        for thread_id in ("a", "b", "c"):
            await put(s, thread_id, {}, {}, {})
        await s.aevict_all_threads()  # all still queued for PostgreSQL: all kept
        assert all(raw.exists(*s.thread_keys(t).data) > 0 for t in "abc")
        await outbox.ack(await outbox.read(10, own_pending=False))  # now durable
        await put(s, "d", {}, {}, {})  # queued, not durable
        await s.aevict_thread("a")
        assert raw.exists(*s.thread_keys("a").data) == 0
        await s.aevict_all_threads()
        assert all(raw.exists(*s.thread_keys(t).data) == 0 for t in "bc")
        assert [t.config["configurable"]["thread_id"] async for t in s.alist(None)] == ["d"]
        assert await outbox.length() == 1, "evicting never touches the queue"


async def test_keys_holding_another_thread_id_are_refused_not_served(
    saver: RedisHotSaver, raw: Any
) -> None:
    await put(saver, "mine", {"x": 1}, {"x": "1"}, {"x": "1"})
    # What a sha256 collision would look like: the keys name another thread inside.
    raw.hset(saver.thread_keys("mine").meta, "thread_id", "someone else")
    with pytest.raises(DualSaverError, match="another thread_id"):
        await saver.aget_tuple(config("mine"))
    with pytest.raises(DualSaverError, match="another thread_id"):
        await put(saver, "mine", {}, {}, {})


async def test_records_are_stored_as_they_are_and_queued_only_when_asked(
    redis_url: str, redis_prefix: str, raw: Any
) -> None:
    async with RedisHotSaver.from_conn_string(redis_url, prefix=redis_prefix, outbox=True) as s:
        checkpoint = empty_checkpoint()
        record = checkpoint_record(s.serde, s.limits, config("r"), checkpoint, {"k": 1}, {})
        assert await s.aput_record(record, enqueue=False) is None
        outbox = s.thread_keys("r").outbox
        assert raw.exists(outbox) == 0 and (await s.athread_info("r"))["pending"] == 0
        entry = await s.aput_record(record, enqueue=True)
        assert [e[0].decode() for e in raw.xrange(outbox)] == [entry]
        assert unpack_record(raw.xrange(outbox)[0][1][b"r"]) == record
        found = await s.aget_tuple(config("r"))
        assert found is not None and found.metadata == {"k": 1}
