"""What every saver kind does with a thread's history: DeltaChannel history, blobs
written once per version, prune, copy and delete_for_runs. Checked through the public
API, with each tier's stored blobs (``Kind.blobs``) where the contract is about what
is kept, and the bystander thread's stored state untouched."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver

from langgraph_dualsaver.records import version_key
from tests.contract.conftest import BYSTANDER, Kind
from tests.helpers import DELTA_ITEMS, chat_graph, checkpoint_of, config, delta_thread, drain

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def put(saver: Any, parent: Any, values: dict[str, Any], versions: dict[str, str],
              new_versions: dict[str, str], **metadata: Any) -> Any:  # fmt: skip
    cp = checkpoint_of(values, versions)
    return await saver.aput(parent, cp, {"source": "loop", **metadata}, new_versions)


def listed(items: list[Any]) -> list[tuple[Any, ...]]:
    """What a listing holds, but the thread_id: to compare a copy with its source."""
    return [
        (t.config["configurable"]["checkpoint_id"], t.checkpoint, t.metadata, t.pending_writes)
        for t in items
    ]


async def test_delta_history_fast_path_matches_the_ancestor_walk(kind: Kind, thread: str) -> None:
    saver = kind.saver
    graph = await delta_thread(saver, thread)
    history = [s async for s in graph.aget_state_history(config(thread))]
    assert len(history) > 12
    channels = ["items", "n", "log", "absent"]
    for state in history:
        fast = await saver.aget_delta_channel_history(config=state.config, channels=channels)
        walk = await BaseCheckpointSaver.aget_delta_channel_history(
            saver, config=state.config, channels=channels
        )
        assert fast == walk, state.config
    latest = await saver.aget_delta_channel_history(config=config(thread), channels=["items"])
    assert [w[2] for w in latest["items"]["writes"]] == [["i7"], ["i8"]]
    assert latest["items"]["seed"].value == DELTA_ITEMS[:-2]
    state = await graph.aget_state(config(thread))
    assert state.metadata["counters_since_delta_snapshot"] == {"items": [2, 2]}
    assert state.values["items"] == DELTA_ITEMS
    nobody = await saver.aget_delta_channel_history(config=config(f"{thread}-x"), channels=["x"])
    assert nobody == {"x": {"writes": []}}
    assert await saver.aget_delta_channel_history(config=config(thread), channels=[]) == {}


async def test_a_put_stores_blobs_only_for_the_channels_whose_version_changed(
    kind: Kind, thread: str
) -> None:
    first = await put(kind.saver, config(thread), {"a": 1, "b": 2}, {"a": "1", "b": "1"},
                      {"a": "1", "b": "1"})  # fmt: skip
    await put(kind.saver, first, {"a": 3, "b": 2}, {"a": "2", "b": "1"}, {"a": "2"})
    for stored in await kind.blobs(thread):  # "b" is shared by both, not written again
        assert stored == {("a", "1"), ("b", "1"), ("a", "2")}
    latest = await kind.saver.aget_tuple(config(thread))
    assert latest is not None and latest.checkpoint["channel_values"] == {"a": 3, "b": 2}
    older = await kind.saver.aget_tuple(first)
    assert older is not None and older.checkpoint["channel_values"] == {"a": 1, "b": 2}


async def test_prune_keep_latest_keeps_what_delta_channels_need(kind: Kind, thread: str) -> None:
    saver = kind.saver
    delta, plain = f"{thread}-delta", f"{thread}-plain"
    graph = await delta_thread(saver, delta)
    first = await put(saver, config(plain), {"x": 1, "y": 1}, {"x": "1", "y": "1"},
                      {"x": "1", "y": "1"})  # fmt: skip
    await saver.aput_writes(first, [("x", "old")], "task")
    latest = await put(saver, first, {"x": 2, "y": 1}, {"x": "2", "y": "1"}, {"x": "2"})
    await saver.aput_writes(latest, [("x", "new")], "task")
    before = await graph.aget_state(config(delta))
    counters = before.metadata["counters_since_delta_snapshot"]["items"]
    total = len(await drain(saver.alist(config(delta))))
    bystander = await kind.thread_snapshot(BYSTANDER)

    await saver.aprune([delta, plain], strategy="keep_latest")

    after = await graph.aget_state(config(delta))
    assert after.values == before.values
    kept = await drain(saver.alist(config(delta)))
    assert len(kept) == counters[0] + 1 < total  # the head and its ancestors to the snapshot
    referenced = {
        (channel, version_key(version))
        for t in kept
        for channel, version in t.checkpoint["channel_versions"].items()
    }
    for stored in await kind.blobs(delta):
        assert stored <= referenced  # no blob is left that no kept checkpoint uses
    left = await drain(saver.alist(config(plain)))
    assert [t.config for t in left] == [latest]
    assert left[0].checkpoint["channel_values"] == {"x": 2, "y": 1}
    assert left[0].pending_writes == [("task", "x", "new")]
    assert await saver.aget_tuple(first) is None
    for stored in await kind.blobs(plain):
        assert stored == {("x", "2"), ("y", "1")}
    assert await kind.thread_snapshot(BYSTANDER) == bystander
    # The graph carries on from the pruned thread.
    more = await chat_graph(saver, 11).ainvoke({"items": ["more"], "n": 9}, config(delta))
    assert more["items"] == [*DELTA_ITEMS, "more", "i9", "i10"]


async def test_prune_delete_removes_the_threads_and_only_them(kind: Kind, thread: str) -> None:
    first = await put(kind.saver, config(thread), {"x": 1}, {"x": "1"}, {"x": "1"})
    await kind.saver.aput_writes(first, [("x", "w")], "task")
    bystander = await kind.thread_snapshot(BYSTANDER)

    await kind.saver.aprune([thread, thread], strategy="delete")

    assert await kind.saver.aget_tuple(config(thread)) is None
    assert await drain(kind.saver.alist(config(thread))) == []
    assert all(stored == set() for stored in await kind.blobs(thread))
    assert await kind.thread_snapshot(BYSTANDER) == bystander


async def test_copy_thread_copies_the_complete_delta_chain(kind: Kind, thread: str) -> None:
    saver = kind.saver
    source, target = f"{thread}-source", f"{thread}-target"
    graph = await delta_thread(saver, source)
    bystander = await kind.thread_snapshot(BYSTANDER)

    await saver.acopy_thread(source, target)

    copied = await graph.aget_state(config(target))
    original = await graph.aget_state(config(source))
    assert copied.values == original.values
    assert (
        copied.config["configurable"]["checkpoint_id"]
        == (original.config["configurable"]["checkpoint_id"])
    )
    assert listed(await drain(saver.alist(config(target)))) == listed(
        await drain(saver.alist(config(source)))
    )
    history = await saver.aget_delta_channel_history(config=config(target), channels=["items"])
    assert history == await saver.aget_delta_channel_history(
        config=config(source), channels=["items"]
    )
    assert await kind.blobs(target) == await kind.blobs(source)
    assert await kind.thread_snapshot(BYSTANDER) == bystander


async def test_delete_for_runs_removes_the_runs_and_the_blobs_only_they_used(
    kind: Kind, thread: str
) -> None:
    saver = kind.saver
    runs, other = f"{thread}-runs", f"{thread}-other"
    first_run, second_run = f"{thread}-r1", f"{thread}-r2"
    first = await put(saver, config(runs), {"x": "x1", "y": "y1"}, {"x": "1", "y": "1"},
                      {"x": "1", "y": "1"}, run_id=first_run)  # fmt: skip
    second = await put(saver, first, {"x": "x1", "y": "y2"}, {"x": "1", "y": "2"}, {"y": "2"},
                       run_id=second_run)  # fmt: skip
    await saver.aput_writes(second, [("y", "pending")], "task")
    await put(saver, config(other), {"x": 1}, {"x": "1"}, {"x": "1"}, run_id=second_run)
    bystander = await kind.thread_snapshot(BYSTANDER)

    await saver.adelete_for_runs([second_run])

    kept = await saver.aget_tuple(config(runs))
    assert kept is not None and kept.config == first
    assert kept.checkpoint["channel_values"] == {"x": "x1", "y": "y1"}
    assert kept.pending_writes == []
    assert [t.config for t in await drain(saver.alist(config(runs)))] == [first]
    assert await saver.aget_tuple(second) is None
    assert await saver.aget_tuple(config(other)) is None
    for stored in await kind.blobs(runs):
        assert stored == {("x", "1"), ("y", "1")}
    assert await kind.thread_snapshot(BYSTANDER) == bystander
