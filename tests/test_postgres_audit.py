"""The audit trail and the introspection the CLI and the demo print."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Command

from langgraph_dualsaver.durable.audit import SUMMARY_WIDTH, node_of, summarize
from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from tests.helpers import run_config
from tests.test_graphs import pipeline, review_graph


@pytest.mark.pure
@pytest.mark.parametrize(
    ("task_path", "node"),
    [
        ("~__pregel_pull, billing_agent", "billing_agent"),
        ("~__pregel_pull, __start__", "__start__"),
        ("~__pregel_push, ~__pregel_pull, router, 0000000002, False", None),
        ("~__interrupt__, 0000000000", None),
        ("", None),
        ("custom_path", "custom_path"),
    ],
)
def test_node_of_task_paths(task_path: str, node: str | None) -> None:
    assert node_of(task_path) == node


@pytest.mark.pure
def test_summaries_are_short_single_line_and_readable() -> None:
    assert summarize("two\n  lines") == "two lines"
    assert summarize([HumanMessage("I was charged twice"), AIMessage("Refund sent")]) == (
        "human: I was charged twice | ai: Refund sent"
    )
    assert summarize({"decision": "refund", "amount": 612.5}) == (
        "{decision: refund, amount: 612.5}"
    )
    long = summarize("x" * 500)
    assert len(long) == SUMMARY_WIDTH
    assert long.endswith("\u2026")
    assert summarize(None) == "None"


@pytest.fixture
async def saver(pg_dsn: str) -> AsyncIterator[PostgresDurableSaver]:
    async with PostgresDurableSaver.from_conn_string(pg_dsn) as opened:
        await opened.asetup()
        yield opened


async def test_audit_says_which_node_wrote_what_at_which_step(saver) -> None:
    graph = pipeline(saver)
    await graph.ainvoke({"steps": [], "value": 1}, run_config("t"))
    await graph.aupdate_state(run_config("t"), {"value": 9}, as_node="d")

    trail = await saver.aaudit("t")

    state_writes = [(e.step, e.node, e.channel, e.summary) for e in trail if e.channel == "value"]
    assert state_writes == [
        (0, "__start__", "value", "1"),
        (1, "a", "value", "2"),
        (2, "b", "value", "20"),
        (3, "d", "value", "25"),
        (4, None, "value", "9"),  # update_state: its task path names no node
    ]
    steps_by_node = {e.node: e.step for e in trail if e.channel == "steps" and e.node}
    assert steps_by_node == {"__start__": 0, "a": 1, "b": 2, "c": 2, "d": 3}
    assert [e.step for e in trail] == sorted(e.step for e in trail)
    assert all(e.checkpoint_ns == "" and len(e.summary) <= SUMMARY_WIDTH for e in trail)
    info = await saver.athread_info("t")
    assert (info["checkpoints"], info["writes"]) == (6, len(trail))
    assert saver.audit("t") == trail


async def test_audit_keeps_interrupts_and_resumes(saver) -> None:
    graph = review_graph(saver)
    await graph.ainvoke({"steps": [], "value": 1}, run_config("r"))
    await graph.ainvoke(Command(resume="approved"), run_config("r"))

    trail = [(e.step, e.node, e.channel) for e in await saver.aaudit("r")]
    at_review = [entry for entry in trail if entry[0] == 2]
    assert at_review[0] == (2, "review", "__interrupt__")  # the first run's, first
    # The second run writes the resume twice (the command's, which names no node, and
    # the task's own) in writes LangGraph saves concurrently: the trail keeps both, in
    # the order they committed, which either may win.
    assert {(2, None, "__resume__"), (2, "review", "__resume__")} <= set(at_review[1:])
    assert (2, "review", "steps") in at_review
    assert trail[-1][:2] == (3, "finish")


async def test_an_undecodable_write_is_shown_by_size_and_counted(saver, pg_dsn) -> None:
    await pipeline(saver).ainvoke({"steps": [], "value": 1}, run_config("t"))

    class Blind(JsonPlusSerializer):
        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            raise ValueError("not on the allowlist")

    async with PostgresDurableSaver.from_conn_string(pg_dsn, serde=Blind()) as blind:
        trail = await blind.aaudit("t")

    assert trail and all(e.summary.startswith("<") and "bytes>" in e.summary for e in trail)
    assert blind.counters["audit_undecodable"] == len(trail)


async def test_threads_newest_first_with_counts_and_filter(saver) -> None:
    graph = pipeline(saver)
    await graph.ainvoke({"steps": [], "value": 1}, run_config("older"))
    await graph.ainvoke({"steps": [], "value": 1}, run_config("newer"))
    await graph.aupdate_state(run_config("newer"), {"value": 0}, as_node="d")

    threads = await saver.athreads()

    assert [(t.thread_id, t.step, t.checkpoints) for t in threads] == [
        ("newer", 4, 6),
        ("older", 3, 5),
    ]
    latest = await saver.aget_tuple(run_config("newer"))
    assert threads[0].checkpoint_id == latest.checkpoint["id"]
    assert [t.thread_id for t in await saver.athreads(limit=1)] == ["newer"]
    assert [t.thread_id for t in await saver.athreads(filter={"source": "update"})] == ["newer"]
    assert saver.threads(limit=5) == threads
    assert await saver.athread_info("missing") == {"checkpoints": 0, "blobs": 0, "writes": 0}
