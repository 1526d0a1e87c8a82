"""Expiry: a thread's keys share one deadline and go together; reads can keep a thread
alive; no ttl means no expiry; in outbox mode nothing expires until it is durable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_dualsaver.chain.outbox import Outbox
from langgraph_dualsaver.hot.saver import RedisHotSaver
from langgraph_dualsaver.records import unpack_record

SHORT = timedelta(milliseconds=400)


@pytest.fixture
def open_saver(redis_url: str, redis_prefix: str) -> Callable[..., Any]:
    def make(**options: Any) -> Any:
        return RedisHotSaver.from_conn_string(redis_url, prefix=redis_prefix, **options)

    return make


async def write_thread(saver: RedisHotSaver, thread_id: str) -> Any:
    """Two checkpoints (so every key type exists: meta, cp, idx, blobs, writes)."""
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    for step in range(2):
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"x": step}
        checkpoint["channel_versions"] = {"x": str(step + 1)}
        config = await saver.aput(config, checkpoint, {"step": step}, {"x": str(step + 1)})
    await saver.aput_writes(config, [("x", 5)], "task")
    return config


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


def thread_key_count(raw: Any, prefix: str, saver: RedisHotSaver, thread_id: str) -> int:
    """Every key of the thread, found by scanning (test-side only) for its digest."""
    digest = saver.thread_keys(thread_id).meta.split(":")[-2]
    return len(list(raw.scan_iter(match=f"{prefix}:*{digest}*")))


async def test_a_thread_expires_whole_with_no_orphan_keys(
    open_saver: Callable[..., Any], raw: Any, redis_prefix: str
) -> None:
    async with open_saver(ttl=SHORT) as saver:
        await write_thread(saver, "short-lived")
        keys = saver.thread_keys("short-lived").data
        assert raw.exists(*keys) == 5
        deadlines = {raw.pexpiretime(key) for key in keys}
        assert len(deadlines) == 1, "all keys of a thread must share one deadline"
        assert 0 < raw.pttl(keys[0]) <= SHORT / timedelta(milliseconds=1)

        await until(lambda: raw.exists(*keys) == 0)
        assert thread_key_count(raw, redis_prefix, saver, "short-lived") == 0
        assert await saver.aget_tuple({"configurable": {"thread_id": "short-lived"}}) is None
        assert [t async for t in saver.alist(None)] == []


async def test_refresh_on_read_keeps_a_read_thread_alive(
    open_saver: Callable[..., Any], raw: Any
) -> None:
    async with open_saver(ttl=SHORT, refresh_on_read=True) as saver:
        await write_thread(saver, "read")
        await write_thread(saver, "unread")
        unread = saver.thread_keys("unread").data
        read_config = {"configurable": {"thread_id": "read"}}
        reads = 0
        while raw.exists(*unread):  # keep reading one thread until the other expired
            assert await saver.aget_tuple(read_config) is not None
            reads += 1
            await asyncio.sleep(0.05)
        assert reads > 1
        assert raw.exists(*saver.thread_keys("read").data) == 5
        assert await saver.aget_tuple(read_config) is not None


async def test_reads_do_not_extend_the_ttl_without_refresh_on_read(
    open_saver: Callable[..., Any], raw: Any
) -> None:
    async with open_saver(ttl=timedelta(minutes=5)) as saver:
        await write_thread(saver, "t")
        meta = saver.thread_keys("t").meta
        before = raw.pexpiretime(meta)
        await until(lambda: raw.pttl(meta) < 5 * 60_000 - 20)  # some time has passed
        await saver.aget_tuple({"configurable": {"thread_id": "t"}})
        assert raw.pexpiretime(meta) == before


async def test_a_thread_without_ttl_never_expires(open_saver: Callable[..., Any], raw: Any) -> None:
    async with open_saver(ttl=None, refresh_on_read=True) as saver:
        await write_thread(saver, "forever")
        await saver.aget_tuple({"configurable": {"thread_id": "forever"}})
        keys = saver.thread_keys("forever").data
        assert [raw.pttl(key) for key in keys] == [-1] * 5
        info = await saver.athread_info("forever")
        assert list(info["keys"].values()) == [-1] * 5
        assert info["checkpoints"] == 2


async def test_outbox_mode_keeps_a_thread_until_it_is_durable(
    open_saver: Callable[..., Any], raw: Any
) -> None:
    async with open_saver(ttl=SHORT, outbox=True) as saver:
        config = {"configurable": {"thread_id": "queued", "checkpoint_ns": ""}}
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"x": 1}
        checkpoint["channel_versions"] = {"x": "1"}
        saved = await saver.aput(config, checkpoint, {"n": 1}, {"x": "1"})
        await saver.aput_writes(saved, [("x", 2)], "task")
        tk = saver.thread_keys("queued")
        assert [raw.pttl(key) for key in tk.data] == [-1] * 5
        assert (await saver.athread_info("queued"))["pending"] == 2

        entries = raw.xrange(tk.outbox)
        assert len(entries) == 2, "one entry per write, in write order"
        put_record, writes_record = (unpack_record(e[1][b"r"]) for e in entries)
        assert put_record.thread_id == "queued" and put_record.checkpoint_id == checkpoint["id"]
        assert [b.channel for b in put_record.blobs] == ["x"]
        assert [(w.channel, w.task_id) for w in writes_record.writes] == [("x", "task")]

        outbox = Outbox.of(saver, "test")
        await outbox.ensure_group()
        first, second = await outbox.read(10, own_pending=False)
        await outbox.ack([first])
        assert [raw.pttl(key) for key in tk.data] == [-1] * 5, "one record is still pending"
        await outbox.ack([second])
        assert (await saver.athread_info("queued"))["pending"] == 0
        assert len({raw.pexpiretime(key) for key in tk.data}) == 1
        assert all(raw.pttl(key) > 0 for key in tk.data)
        await until(lambda: raw.exists(*tk.data) == 0)
        assert raw.xlen(tk.outbox) == 0, "acknowledged entries leave the outbox at once"
        assert raw.pttl(tk.outbox) == -1, "the outbox stream itself never expires"


async def test_a_write_while_pending_removes_the_expiry_again(
    open_saver: Callable[..., Any], raw: Any
) -> None:
    async with open_saver(ttl=timedelta(minutes=5), outbox=True) as saver:
        saved = await write_thread(saver, "t")  # three records queued
        outbox = Outbox.of(saver, "test")
        await outbox.ensure_group()
        await outbox.ack(await outbox.read(10, own_pending=False))
        tk = saver.thread_keys("t")
        assert all(raw.pttl(key) > 0 for key in tk.data)
        await saver.aput_writes(saved, [("y", 1)], "task-2")
        assert [raw.pttl(key) for key in tk.data] == [-1] * 5


async def test_a_write_through_commit_discards_its_entry_and_counts_it_durable(
    open_saver: Callable[..., Any], raw: Any
) -> None:
    async with open_saver(ttl=timedelta(minutes=5), outbox=True) as saver:
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        await saver.aput(config, empty_checkpoint(), {}, {})
        tk = saver.thread_keys("t")
        [(entry_id, _)] = raw.xrange(tk.outbox)
        entry = entry_id.decode()
        outbox = Outbox.of(saver, "test")
        await outbox.discard([("t", entry)])
        assert raw.xlen(tk.outbox) == 0
        assert (await saver.athread_info("t"))["pending"] == 0
        assert all(raw.pttl(key) > 0 for key in tk.data if raw.exists(key))
        await outbox.discard([("t", entry)])  # already gone: nothing counted twice
        assert (await saver.athread_info("t"))["pending"] == 0


async def test_deleting_a_thread_in_outbox_mode_queues_a_tombstone(
    open_saver: Callable[..., Any], raw: Any
) -> None:
    async with open_saver(outbox=True) as saver:
        await write_thread(saver, "doomed")
        tk = saver.thread_keys("doomed")
        entry = await saver.adelete_thread("doomed")
        assert raw.exists(*tk.data) == 0
        last_id, fields = raw.xrange(tk.outbox)[-1]
        assert last_id.decode() == entry
        assert fields == {b"d": b"doomed", b"m": b""}  # no key given: no tag
