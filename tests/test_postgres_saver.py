"""PostgresDurableSaver beyond the interface: ownership and event loops, storage layout,
query plans, DeltaChannel history, prune, copy and delete_for_runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
import pytest
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from langgraph_dualsaver import postgres_sql as sql
from langgraph_dualsaver.errors import EventLoopError
from langgraph_dualsaver.postgres import PostgresDurableSaver
from langgraph_dualsaver.records import DEFAULT_LIMITS, checkpoint_record


def config(thread_id: str, ns: str = "", checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


async def put(saver, thread_id, values, versions, new_versions=None, parent=None, **metadata):
    cp = generate_checkpoint(channel_values=values, channel_versions=versions)
    cfg = config(thread_id, checkpoint_id=parent)
    meta = {"source": "loop", "step": 0, **metadata}
    return await saver.aput(cfg, cp, meta, versions if new_versions is None else new_versions)


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


@pytest.fixture
async def saver(pg_dsn: str) -> AsyncIterator[PostgresDurableSaver]:
    async with PostgresDurableSaver.from_conn_string(pg_dsn) as opened:
        await opened.asetup()
        yield opened


# -- event loops and ownership -----------------------------------------------------------


class Counter(TypedDict):
    counter: int


def counting_graph(saver: BaseCheckpointSaver) -> Any:
    builder = StateGraph(Counter)
    builder.add_node("tick", lambda s: {"counter": s["counter"] + 1})
    builder.add_edge(START, "tick")
    builder.add_edge("tick", END)
    return builder.compile(checkpointer=saver)


async def test_sync_call_from_the_callers_pool_loop_raises_instead_of_hanging(pg_dsn) -> None:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        saver = PostgresDurableSaver.from_pool(pool)
        await saver.asetup()
        graph = counting_graph(saver)
        cfg = config("own-loop")

        with pytest.raises(EventLoopError, match="await the async method"):
            saver.get_tuple(cfg)
        with pytest.raises(EventLoopError):
            graph.invoke({"counter": 0}, cfg)

        # From another thread, the same sync calls run on the pool's loop and work.
        assert await asyncio.to_thread(graph.invoke, {"counter": 0}, cfg) == {"counter": 1}
        assert (await asyncio.to_thread(saver.get_tuple, cfg)).checkpoint["id"] == (
            (await saver.aget_tuple(cfg)).checkpoint["id"]
        )
        # Another loop cannot use a pool bound to this one: a clear error, not a hang.
        with pytest.raises(EventLoopError, match="bound to another event loop"):
            await asyncio.to_thread(asyncio.run, saver.aget_tuple(cfg))

        async with saver:
            pass  # closes what the saver opened: nothing
        assert not pool.is_closing()
        assert await pool.fetchval("SELECT count(*) FROM dualsaver_checkpoints") > 0
    finally:
        await pool.close()


def test_sync_use_as_a_context_manager(pg_dsn: str) -> None:
    with PostgresDurableSaver.from_conn_string(pg_dsn) as saver:
        saver.setup()
        graph = counting_graph(saver)
        assert graph.invoke({"counter": 41}, config("sync")) == {"counter": 42}
        assert graph.get_state(config("sync")).values == {"counter": 42}
        assert saver.thread_info("sync")["checkpoints"] == 3


# -- storage layout ----------------------------------------------------------------------


class Document(TypedDict):
    document: str
    counter: int


async def test_steps_that_change_a_small_channel_write_the_large_one_once(saver, pg_dsn) -> None:
    builder = StateGraph(Document)
    builder.add_node("tick", lambda s: {"counter": s["counter"] + 1})
    builder.add_edge(START, "tick")
    builder.add_conditional_edges("tick", lambda s: END if s["counter"] >= 10 else "tick")
    graph = builder.compile(checkpointer=saver)
    document = "lorem ipsum " * 20_000  # 240 kB

    result = await graph.ainvoke({"document": document, "counter": 0}, config("big"))

    assert result == {"document": document, "counter": 10}
    counts = dict(
        (r["channel"], r["n"])
        for r in await fetch(
            pg_dsn,
            "SELECT channel, count(*) AS n FROM dualsaver_blobs WHERE thread_id = $1 "
            "GROUP BY channel",
            "big",
        )
    )
    assert counts["document"] == 1
    assert counts["counter"] == 11  # the input, then ten ticks
    assert (await saver.athread_info("big"))["checkpoints"] == 12


async def test_latest_and_by_id_lookups_read_one_checkpoint_row(saver, pg_dsn) -> None:
    # 3,000 checkpoints in one thread: the lookups still read exactly one row each.
    parent = None
    for _ in range(3):
        records = []
        for _ in range(1000):
            cp = generate_checkpoint(channel_values={"x": 1}, channel_versions={"x": 1})
            record = checkpoint_record(
                saver.serde, DEFAULT_LIMITS, config("deep", checkpoint_id=parent), cp, {}, {"x": 1}
            )
            records.append(record)
            parent = record.checkpoint_id
        await saver.awrite_batch(records)
    await fetch(pg_dsn, "ANALYZE")

    for query, args in ((sql.GET_LATEST, ("deep", "")), (sql.GET_BY_ID, ("deep", "", parent))):
        [row] = await fetch(pg_dsn, "EXPLAIN (ANALYZE, FORMAT JSON) " + query, *args)
        scans = _nodes(json.loads(row[0])[0]["Plan"], "dualsaver_checkpoints")
        assert [s["Node Type"] for s in scans] == ["Index Scan"]
        assert scans[0]["Index Name"] == "dualsaver_checkpoints_pkey"
        assert scans[0]["Actual Rows"] == 1
        if query is sql.GET_LATEST:
            assert scans[0]["Scan Direction"] == "Backward"
    latest = await saver.aget_tuple(config("deep"))
    assert latest.checkpoint["id"] == parent


def _nodes(plan: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    found = [plan] if plan.get("Relation Name") == relation else []
    for child in plan.get("Plans", []):
        found += _nodes(child, relation)
    return found


async def test_list_across_threads_newest_first_with_before_limit_and_namespaces(saver) -> None:
    saved = []
    for thread_id, ns in [("l1", ""), ("l2", ""), ("l1", "sub:1"), ("l3", ""), ("l1", "")]:
        cp = generate_checkpoint()
        saved.append(await saver.aput(config(thread_id, ns), cp, {"source": "loop"}, {}))
    ids = [s["configurable"]["checkpoint_id"] for s in saved]

    everything = [t.config["configurable"]["checkpoint_id"] async for t in saver.alist(None)]
    assert everything == ids[::-1]
    page = saver.alist(None, before=saved[3], limit=2)
    assert [t.config["configurable"]["checkpoint_id"] async for t in page] == [ids[2], ids[1]]
    # A namespace given is matched exactly; no namespace means all of the thread's.
    root = [t.checkpoint["id"] async for t in saver.alist(config("l1"))]
    assert root == [ids[4], ids[0]]
    every_ns = [
        t.checkpoint["id"] async for t in saver.alist({"configurable": {"thread_id": "l1"}})
    ]
    assert every_ns == [ids[4], ids[2], ids[0]]
    assert [t async for t in saver.alist(None, limit=0)] == []


async def test_delete_for_runs_frees_only_blobs_nobody_else_uses(saver, pg_dsn) -> None:
    first = await put(saver, "runs", {"x": "x1", "y": "y1"}, {"x": 1, "y": 1}, run_id="r1")
    second = await put(
        saver,
        "runs",
        {"x": "x1", "y": "y2"},
        {"x": 1, "y": 2},
        {"y": 2},
        first["configurable"]["checkpoint_id"],
        run_id="r2",
    )
    await saver.aput_writes(second, [("y", "pending")], "task")

    await saver.adelete_for_runs(["r2"])

    blobs = await fetch(pg_dsn, "SELECT channel, version FROM dualsaver_blobs ORDER BY 1, 2")
    assert [tuple(b) for b in blobs] == [("x", "1"), ("y", "1")]
    assert await saver.athread_info("runs") == {"checkpoints": 1, "blobs": 2, "writes": 0}
    kept = await saver.aget_tuple(config("runs"))
    assert kept.checkpoint["channel_values"] == {"x": "x1", "y": "y1"}


# -- DeltaChannel --------------------------------------------------------------------------


def extend(state: list[str], writes: list[list[str]]) -> list[str]:
    return state + [item for write in writes for item in write]


class Chat(TypedDict):
    items: Annotated[list[str], DeltaChannel(extend, snapshot_frequency=3)]
    n: int


def chat_graph(saver: BaseCheckpointSaver, stop: int) -> Any:
    builder = StateGraph(Chat)
    builder.add_node("step", lambda s: {"items": [f"i{s['n']}"], "n": s["n"] + 1})
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", lambda s: END if s["n"] >= stop else "step")
    return builder.compile(checkpointer=saver)


async def delta_thread(saver: BaseCheckpointSaver, thread_id: str) -> Any:
    """Eight steps, then a fork from step 4 that runs on to n=9: the latest checkpoint
    is two updates past its last snapshot (snapshot_frequency=3)."""
    graph = chat_graph(saver, 8)
    cfg = config(thread_id)
    await graph.ainvoke({"items": [], "n": 0}, cfg)
    history = [s async for s in graph.aget_state_history(cfg)]
    past = next(s for s in history if s.metadata["step"] == 4)
    forked = await graph.aupdate_state(past.config, {"items": ["forked"]}, as_node="step")
    await chat_graph(saver, 9).ainvoke(None, forked)
    return graph


async def test_delta_history_fast_path_matches_the_ancestor_walk(saver) -> None:
    graph = await delta_thread(saver, "delta")
    history = [s async for s in graph.aget_state_history(config("delta"))]
    assert len(history) > 12
    channels = ["items", "n", "absent"]
    for state in history:
        fast = await saver.aget_delta_channel_history(config=state.config, channels=channels)
        walk = await BaseCheckpointSaver.aget_delta_channel_history(
            saver, config=state.config, channels=channels
        )
        assert fast == walk, state.config
    latest = await saver.aget_delta_channel_history(config=config("delta"), channels=["items"])
    assert [w[2] for w in latest["items"]["writes"]] == [["i7"], ["i8"]]
    assert latest["items"]["seed"].value == ["i0", "i1", "i2", "i3", "forked", "i4", "i5", "i6"]
    state = await graph.aget_state(config("delta"))
    assert state.metadata["counters_since_delta_snapshot"] == {"items": [2, 2]}
    assert state.values["items"] == [
        "i0", "i1", "i2", "i3", "forked", "i4", "i5", "i6", "i7", "i8"
    ]  # fmt: skip
    assert await saver.aget_delta_channel_history(config=config("nobody"), channels=["x"]) == {
        "x": {"writes": []}
    }


async def test_prune_keep_latest_keeps_what_delta_channels_need(saver, pg_dsn) -> None:
    graph = await delta_thread(saver, "delta")
    await put(saver, "plain", {"x": 1}, {"x": 1})
    await put(saver, "plain", {"x": 2}, {"x": 2})
    before = await graph.aget_state(config("delta"))
    counters = before.metadata["counters_since_delta_snapshot"]["items"]
    total = (await saver.athread_info("delta"))["checkpoints"]

    await saver.aprune(["delta", "plain"], strategy="keep_latest")

    after = await graph.aget_state(config("delta"))
    assert after.values == before.values
    kept = (await saver.athread_info("delta"))["checkpoints"]
    assert kept == counters[0] + 1 < total  # the head and its ancestors to the snapshot
    assert (await saver.athread_info("plain"))["checkpoints"] == 1
    orphans = await fetch(
        pg_dsn,
        "SELECT b.channel, b.version FROM dualsaver_blobs b WHERE NOT EXISTS ("
        " SELECT 1 FROM dualsaver_checkpoints c WHERE c.thread_id = b.thread_id"
        " AND c.checkpoint_ns = b.checkpoint_ns AND c.channel_versions ->> b.channel = b.version)",
    )
    assert orphans == []
    # The graph carries on from the pruned thread.
    more = await chat_graph(saver, 11).ainvoke({"items": ["more"], "n": 9}, config("delta"))
    assert more["items"] == [*before.values["items"], "more", "i9", "i10"]


async def test_prune_rejects_unknown_strategies_and_delete_removes_threads(saver) -> None:
    await put(saver, "gone", {"x": 1}, {"x": 1})
    with pytest.raises(ValueError, match="unknown prune strategy 'oldest'"):
        await saver.aprune(["gone"], strategy="oldest")
    await saver.aprune(["gone"], strategy="delete")
    assert await saver.athread_info("gone") == {"checkpoints": 0, "blobs": 0, "writes": 0}


async def test_copy_thread_copies_the_complete_delta_chain(saver) -> None:
    graph = await delta_thread(saver, "source")

    await saver.acopy_thread("source", "target")

    source = await graph.aget_state(config("source"))
    target = await graph.aget_state(config("target"))
    assert target.values == source.values
    assert (
        target.config["configurable"]["checkpoint_id"]
        == (source.config["configurable"]["checkpoint_id"])
    )
    assert await saver.athread_info("target") == await saver.athread_info("source")
