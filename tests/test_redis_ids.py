"""Any string is a valid thread_id, checkpoint_ns or checkpoint_id: pattern characters,
hash-tag braces, separators and aliasing pairs are written, listed and deleted exactly,
and a canary thread next to them is never touched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_dualsaver.hot.saver import RedisHotSaver
from langgraph_dualsaver.records import Limits

CANARY = "canary"  # matched by "*", "?"-free patterns like "[a-z]*", and so on

# (thread_id, checkpoint_ns, checkpoint_id) written by each case.
CASES: dict[str, list[tuple[str, str, str]]] = {
    "star": [("*", "", "1")],
    "question_mark": [("?", "", "1")],
    "character_class": [("[a-z]*", "", "1")],
    "hash_tag_braces": [("{x}", "", "1")],
    "colon": [("a:b", "", "1")],
    "namespace_aliasing": [("t", "a:b", "c"), ("t", "a", "b:c")],
    "empty_namespace_vs_a_named_one": [("t", "", "1"), ("t", "__empty__", "1")],
    "everything_at_once": [("*?[]{}:\\ ü", "{a}*:[b]", "x:{y}?")],
}


@pytest.fixture
async def saver(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisHotSaver]:
    limits = Limits(max_id_bytes=2_000_000, max_key_bytes=8_000_000)
    async with RedisHotSaver.from_conn_string(redis_url, prefix=redis_prefix, limits=limits) as s:
        await s.asetup()
        yield s


async def put(saver: RedisHotSaver, thread_id: str, ns: str, checkpoint_id: str) -> None:
    checkpoint = empty_checkpoint()
    checkpoint["id"] = checkpoint_id
    checkpoint["channel_values"] = {"who": [thread_id, ns, checkpoint_id]}
    checkpoint["channel_versions"] = {"who": "1"}
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
    saved = await saver.aput(config, checkpoint, {"who": thread_id}, {"who": "1"})
    await saver.aput_writes(saved, [("note", [thread_id, ns])], "task")


def snapshot(saver: RedisHotSaver, raw: Any, thread_id: str) -> dict[str, bytes | None]:
    """The exact serialized content of every key of a thread."""
    return {key: raw.dump(key) for key in saver.thread_keys(thread_id).data}


@pytest.mark.parametrize("case", list(CASES))
async def test_an_adversarial_id_round_trips_and_leaves_the_canary_alone(
    saver: RedisHotSaver, raw: Any, case: str
) -> None:
    await put(saver, CANARY, "", "1")
    canary = snapshot(saver, raw, CANARY)
    assert all(canary.values())
    written = CASES[case]
    for thread_id, ns, checkpoint_id in written:
        await put(saver, thread_id, ns, checkpoint_id)

    for thread_id, ns, checkpoint_id in written:
        config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
        found = await saver.aget_tuple(config)
        assert found is not None
        assert found.config["configurable"] == {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
        assert found.checkpoint["channel_values"] == {"who": [thread_id, ns, checkpoint_id]}
        assert found.pending_writes == [("task", "note", [thread_id, ns])]
        listed = [t.config["configurable"] async for t in saver.alist(config)]
        assert listed == [found.config["configurable"]]
    everything = {tuple(t.config["configurable"].values()) async for t in saver.alist(None)}
    assert everything == {*written, (CANARY, "", "1")}
    assert snapshot(saver, raw, CANARY) == canary

    for thread_id in {t for t, _, _ in written}:
        await saver.adelete_thread(thread_id)
        assert raw.exists(*saver.thread_keys(thread_id).data) == 0
        assert await saver.aget_tuple({"configurable": {"thread_id": thread_id}}) is None
    remaining = [t.config["configurable"]["thread_id"] async for t in saver.alist(None)]
    assert remaining == [CANARY]
    assert snapshot(saver, raw, CANARY) == canary


async def test_a_one_megabyte_thread_id_works_with_a_raised_limit(
    saver: RedisHotSaver, raw: Any
) -> None:
    thread_id = "é" * 500_000  # 1,000,000 UTF-8 bytes
    await put(saver, thread_id, "", "1")
    keys = saver.thread_keys(thread_id).data
    assert all(len(key) < 200 for key in keys)
    found = await saver.aget_tuple({"configurable": {"thread_id": thread_id}})
    assert found is not None and found.config["configurable"]["thread_id"] == thread_id
    listed = [t async for t in saver.alist(None)]
    assert [t.config["configurable"]["thread_id"] for t in listed] == [thread_id]
    await saver.adelete_thread(thread_id)
    assert raw.exists(*keys) == 0
