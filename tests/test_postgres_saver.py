"""PostgresDurableSaver beyond the interface: ownership and event loops, query plans,
listing, and ``threads``. What every saver kind does (bad input, DeltaChannel history,
prune, copy, delete_for_runs) is in ``tests/contract``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from langgraph_dualsaver.durable import sql as sql
from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from langgraph_dualsaver.errors import EventLoopError
from langgraph_dualsaver.records import DEFAULT_LIMITS, checkpoint_record
from tests.helpers import config, fetch


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
        saved.append(await saver.aput(config(thread_id, ns=ns), cp, {"source": "loop"}, {}))
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


# -- DeltaChannel --------------------------------------------------------------------------


# -- threads ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "crafted",
    [
        {"source') OR 1=1 --": "input"},
        {"'; DELETE FROM dualsaver_checkpoints; --": 1},
        {"source": "input' OR '1'='1"},
        {"step": {"$ne": None}},
        {"source": "in\x00put"},
    ],
    ids=["key-or", "key-delete", "value-or", "operator", "nul"],
)
async def test_threads_with_a_filter_crafted_as_sql_matches_nothing(
    saver: PostgresDurableSaver, crafted: dict[str, Any]
) -> None:
    cp = generate_checkpoint()
    await saver.aput(config("listed"), cp, {"source": "input"}, {})
    assert await saver.athreads(filter=crafted) == []
    # The same key, spelled plainly, does match: the filter really was applied.
    assert [t.thread_id for t in await saver.athreads(filter={"source": "input"})] == ["listed"]
