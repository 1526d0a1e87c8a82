"""Graph-level behaviour, written once and run against every saver kind.

Each test compiles small LangGraph graphs with the saver from ``tests.factories`` and
checks what a user sees: results, state, history, interrupts, forks and updates.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from tests.factories import SAVER_KINDS, open_saver


class State(TypedDict):
    steps: Annotated[list[str], operator.add]
    value: int


def _node(name: str, change: Any) -> Any:
    def run(state: State) -> dict[str, Any]:
        return {"steps": [name], "value": change(state["value"])}

    run.__name__ = name
    return run


def pipeline(saver: BaseCheckpointSaver) -> Any:
    """start -> a -> (b, c in parallel) -> d: four nodes, a reducer channel."""
    builder = StateGraph(State)
    builder.add_node("a", _node("a", lambda v: v + 1))
    builder.add_node("b", _node("b", lambda v: v * 10))
    builder.add_node("c", lambda state: {"steps": ["c"]})
    builder.add_node("d", _node("d", lambda v: v + 5))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("a", "c")
    builder.add_edge(["b", "c"], "d")
    builder.add_edge("d", END)
    return builder.compile(checkpointer=saver)


def review_graph(saver: BaseCheckpointSaver) -> Any:
    """start -> prepare -> review (asks a human through interrupt()) -> finish."""

    def review(state: State) -> dict[str, Any]:
        answer = interrupt({"question": "approve?", "value": state["value"]})
        return {"steps": [f"review:{answer}"]}

    builder = StateGraph(State)
    builder.add_node("prepare", _node("prepare", lambda v: v + 1))
    builder.add_node("review", review)
    builder.add_node("finish", _node("finish", lambda v: v * 2))
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "review")
    builder.add_edge("review", "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=saver)


def checkpoint_id(config: RunnableConfig | None) -> str | None:
    return config and config["configurable"]["checkpoint_id"]


def thread() -> RunnableConfig:
    return {"configurable": {"thread_id": f"graph-{uuid.uuid4()}"}}


PIPELINE_RESULT = {"steps": ["a", "b", "c", "d"], "value": 25}  # from value=1


EXCLUSIVE = "+exclusive_runs"


@pytest.fixture(params=[*SAVER_KINDS, *(kind + EXCLUSIVE for kind in SAVER_KINDS)])
def saver_variant(request: pytest.FixtureRequest) -> str:
    """A saver kind, as is or with ``exclusive_runs=True``: every graph behaves the same."""
    return str(request.param)


@pytest.fixture
def saver_kind(saver_variant: str) -> str:
    return saver_variant.removesuffix(EXCLUSIVE)


@pytest.fixture
def stores(saver_kind: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Only the servers this kind needs (a sync fixture: the database fixture runs its
    own event loop)."""
    pg_dsn = request.getfixturevalue("pg_dsn") if saver_kind != "redis" else ""
    if saver_kind == "postgres":
        return {"pg_dsn": pg_dsn, "redis_url": "", "prefix": ""}
    return {
        "pg_dsn": pg_dsn,
        "redis_url": request.getfixturevalue("redis_url"),
        "prefix": request.getfixturevalue("redis_prefix"),
    }


@pytest.fixture
async def saver(
    saver_variant: str, saver_kind: str, stores: dict[str, str]
) -> AsyncIterator[BaseCheckpointSaver]:
    exclusive = saver_variant.endswith(EXCLUSIVE)
    async with open_saver(saver_kind, **stores, exclusive_runs=exclusive) as opened:
        yield opened


async def test_invoke_and_ainvoke_on_one_saver(saver: BaseCheckpointSaver) -> None:
    graph = pipeline(saver)
    sync_thread, async_thread = thread(), thread()

    assert graph.invoke({"steps": [], "value": 1}, sync_thread) == PIPELINE_RESULT
    assert await graph.ainvoke({"steps": [], "value": 1}, async_thread) == PIPELINE_RESULT

    # Each thread continues through the other API, from the state the first one saved.
    second = await graph.ainvoke({"steps": ["again"], "value": 1}, sync_thread)
    assert second["steps"] == ["a", "b", "c", "d", "again", "a", "b", "c", "d"]
    third = graph.invoke({"steps": ["again"], "value": 1}, async_thread)
    assert third == second
    assert graph.get_state(async_thread).values == (await graph.aget_state(sync_thread)).values


def test_two_asyncio_runs_in_a_row(saver: BaseCheckpointSaver) -> None:
    graph = pipeline(saver)
    config = thread()

    first = asyncio.run(graph.ainvoke({"steps": [], "value": 1}, config))
    second = asyncio.run(graph.ainvoke({"steps": ["again"], "value": 1}, config))

    assert first == PIPELINE_RESULT
    assert second["steps"] == ["a", "b", "c", "d", "again", "a", "b", "c", "d"]
    assert asyncio.run(graph.aget_state(config)).values == second


async def test_interrupt_then_resume(saver: BaseCheckpointSaver) -> None:
    graph = review_graph(saver)
    config = thread()

    paused = await graph.ainvoke({"steps": [], "value": 1}, config)
    assert paused["steps"] == ["prepare"]
    [pending] = paused["__interrupt__"]
    assert pending.value == {"question": "approve?", "value": 2}
    state = await graph.aget_state(config)
    assert state.next == ("review",)
    assert state.tasks[0].interrupts[0].value == pending.value

    done = await graph.ainvoke(Command(resume="approved"), config)
    assert done == {"steps": ["prepare", "review:approved", "finish"], "value": 4}
    assert (await graph.aget_state(config)).next == ()


async def test_history_and_fork_from_a_past_checkpoint(saver: BaseCheckpointSaver) -> None:
    graph = pipeline(saver)
    config = thread()
    await graph.ainvoke({"steps": [], "value": 1}, config)

    history = [s async for s in graph.aget_state_history(config)]
    assert [s.next for s in history] == [(), ("d",), ("b", "c"), ("a",), ("__start__",)]
    assert [s.metadata["step"] for s in history] == [3, 2, 1, 0, -1]
    ids = [checkpoint_id(s.config) for s in history]
    assert ids == sorted(ids, reverse=True)
    for child, parent in itertools.pairwise(history):
        assert checkpoint_id(child.parent_config) == checkpoint_id(parent.config)

    # Fork after "a": change the value there, then run the rest of the graph again.
    after_a = history[2]
    assert after_a.values == {"steps": ["a"], "value": 2}
    forked = await graph.aupdate_state(after_a.config, {"value": 7})
    result = await graph.ainvoke(None, forked)
    assert result == {"steps": ["a", "b", "c", "d"], "value": 75}

    # The fork is the thread's latest state; the original run is still in the history.
    assert (await graph.aget_state(config)).values == result
    original = await graph.aget_state(history[0].config)
    assert original.values == PIPELINE_RESULT
    forked_history = [s async for s in graph.aget_state_history(config)]
    assert len(forked_history) == len(history) + 3  # the update, after b+c, after d
    assert checkpoint_id(forked_history[2].config) == checkpoint_id(forked)
    assert checkpoint_id(forked_history[2].parent_config) == checkpoint_id(after_a.config)


async def test_update_state_as_a_node(saver: BaseCheckpointSaver) -> None:
    graph = pipeline(saver)
    config = thread()
    await graph.ainvoke({"steps": [], "value": 1}, config)

    updated = graph.update_state(config, {"steps": ["fix"], "value": 42}, as_node="d")

    state = await graph.aget_state(config)
    assert checkpoint_id(state.config) == checkpoint_id(updated)
    assert state.values == {"steps": ["a", "b", "c", "d", "fix"], "value": 42}
    assert state.metadata["source"] == "update"
    assert state.next == ()
    assert graph.get_state(config).values == state.values
