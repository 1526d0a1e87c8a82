"""The savers never draw from ``uuid.uuid4``: LangGraph's tests patch it for repeatable
ids, so a saver that drew from it (building a ``DualSaver`` named its flusher with one)
would shift the ids the graph hands out. Each kind, built and run under a patched
``uuid4``, gives the graph the same ids as LangGraph's ``InMemorySaver``."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph

from tests.factories import SAVER_KINDS, open_saver

THREAD = {"configurable": {"thread_id": "ids"}}


def counting_uuid4() -> Callable[[], uuid.UUID]:
    """A ``uuid4`` that returns 1, 2, 3...: the ids say exactly how many were drawn."""
    counter = itertools.count(1)
    return lambda: uuid.UUID(int=next(counter))


def chat(saver: BaseCheckpointSaver) -> Any:
    """One node that answers; ``add_messages`` gives every message without an id one
    from ``uuid.uuid4``."""

    def reply(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(content=f"seen {len(state['messages'])}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=saver)


async def message_ids(opened: Callable[[], Any]) -> list[str]:
    """Build the saver and run two turns on one thread, all under the patched uuid4."""
    async with opened() as saver:
        graph = chat(saver)
        for text in ("hello", "again"):
            await graph.ainvoke({"messages": [HumanMessage(content=text)]}, THREAD)
        state = await graph.aget_state(THREAD)
    return [message.id for message in state.values["messages"]]


@asynccontextmanager
async def in_memory() -> AsyncIterator[BaseCheckpointSaver]:
    yield InMemorySaver()


@pytest.fixture(params=SAVER_KINDS)
def saver_kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_a_saver_leaves_the_graphs_uuid4_sequence_alone(
    saver_kind: str, redis_url: str, pg_dsn: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uuid, "uuid4", counting_uuid4())
    expected = await message_ids(in_memory)

    monkeypatch.setattr(uuid, "uuid4", counting_uuid4())
    got = await message_ids(
        lambda: open_saver(saver_kind, redis_url=redis_url, pg_dsn=pg_dsn, prefix=redis_prefix)
    )

    assert expected == [str(uuid.UUID(int=n)) for n in (1, 2, 3, 4)]
    assert got == expected
