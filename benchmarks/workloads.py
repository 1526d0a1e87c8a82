"""What the savers are asked to do: the case_8842 graph, conversations, raw checkpoints.

Nothing here measures anything; ``measures.py`` times these workloads.
"""

from __future__ import annotations

import math
import operator
import random
import string
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    Checkpoint,
    CheckpointMetadata,
    copy_checkpoint,
    empty_checkpoint,
)
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from typing_extensions import TypedDict

__all__ = [
    "CaseGraph",
    "CheckpointChain",
    "case_graph",
    "conversation_graph",
    "conversation_steps_per_turn",
    "percentiles",
    "text_of_size",
    "thread_config",
]


def thread_config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def new_thread(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


@lru_cache(maxsize=256)
def text_of_size(size: int, seed: int = 0) -> str:
    """ASCII text of ``size`` bytes that does not compress to nothing."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + " "
    chunk = "".join(rng.choices(alphabet, k=min(size, 4096)))
    return (chunk * (size // len(chunk) + 1))[:size]


def percentiles(samples_s: Sequence[float]) -> dict[str, float | int]:
    """Count, p50, p99 and mean, in milliseconds (nearest-rank percentiles)."""
    if not samples_s:
        return {"n": 0}
    ordered = sorted(samples_s)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[index] * 1000

    return {
        "n": len(ordered),
        "p50_ms": round(rank(50), 4),
        "p99_ms": round(rank(99), 4),
        "mean_ms": round(sum(ordered) / len(ordered) * 1000, 4),
    }


# -- the case_8842 graph ---------------------------------------------------------------


@dataclass
class CaseGraph:
    """How to compile the case_8842 graph and what to feed it."""

    build: Callable[[BaseCheckpointSaver], CompiledStateGraph]
    new_input: Callable[[], dict[str, Any]]
    source: str
    steps_per_invoke: float = 0.0
    """Checkpoints one invoke writes on a fresh thread (measured with InMemorySaver)."""


class _LocalState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    completed_steps: Annotated[list[str], operator.add]
    customer_id: str
    billing: dict[str, Any]
    account: dict[str, Any]
    policy: dict[str, Any]
    final_response: str


def _local_case_graph(checkpointer: BaseCheckpointSaver) -> CompiledStateGraph:
    """The same shape as the app's graph, for when ``langgraph_dualsaver.app`` is absent."""

    def intake(state: _LocalState) -> dict[str, Any]:
        return {"completed_steps": ["intake"]}

    def billing_agent(state: _LocalState) -> dict[str, Any]:
        billing = {"duplicate_detected": True, "duplicate_amount": 49.99, "refund_eligible": True}
        return {"billing": billing, "completed_steps": ["billing_agent"]}

    def account_agent(state: _LocalState) -> dict[str, Any]:
        account = {"issue_found": True, "reset_sent": True, "account_locked": False}
        return {"account": account, "completed_steps": ["account_agent"]}

    def policy_agent(state: _LocalState) -> dict[str, Any]:
        policy = {"approved": True, "reason": "under the limit", "requires_human_review": False}
        return {"policy": policy, "completed_steps": ["policy_agent"]}

    def response_agent(state: _LocalState) -> dict[str, Any]:
        reply = "You were charged twice; a refund of $49.99 is approved."
        return {
            "final_response": reply,
            "messages": [AIMessage(content=reply)],
            "completed_steps": ["response_agent"],
        }

    builder = StateGraph(_LocalState)
    for node in (intake, billing_agent, account_agent, policy_agent, response_agent):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "intake")
    builder.add_edge("intake", "billing_agent")
    builder.add_edge("intake", "account_agent")
    builder.add_edge("billing_agent", "policy_agent")
    builder.add_edge("account_agent", "policy_agent")
    builder.add_edge("policy_agent", "response_agent")
    builder.add_edge("response_agent", END)
    return builder.compile(checkpointer=checkpointer)


def case_graph() -> CaseGraph:
    """The app's ``build_graph`` with a case that runs to the end (no human review)."""
    try:
        from langgraph_dualsaver.app.graph import build_graph, new_case
        from langgraph_dualsaver.app.services import SEED_CUSTOMER
    except ImportError:
        graph = CaseGraph(
            build=_local_case_graph,
            new_input=lambda: {
                "customer_id": "cus_8842",
                "messages": [HumanMessage(content="I was charged twice, and I can't log in.")],
            },
            source="local equivalent (langgraph_dualsaver.app not importable)",
        )
    else:
        graph = CaseGraph(
            build=lambda saver: build_graph(saver),
            new_input=lambda: new_case(SEED_CUSTOMER),
            source="langgraph_dualsaver.app.graph.build_graph (customer cus_8842)",
        )
    graph.steps_per_invoke = _steps_per_invoke(graph)
    return graph


def _steps_per_invoke(graph: CaseGraph) -> float:
    saver = InMemorySaver()
    compiled = graph.build(saver)
    config = thread_config("probe")
    compiled.invoke(graph.new_input(), config)
    return float(len(list(saver.list(config))))


# -- conversations: add_messages against DeltaChannel ---------------------------------


def _add_messages_batch(state: list[AnyMessage], writes: Sequence[Any]) -> list[AnyMessage]:
    """``add_messages`` as DeltaChannel wants it: one call for a batch of writes.

    One merge of all the batch's messages, not one ``add_messages`` per write: the same
    result for appends and replacements by id, and linear instead of quadratic in the
    replay, which runs on every turn.
    """
    batch: list[Any] = []
    for write in writes:
        batch.extend(write if isinstance(write, list) else [write])
    return add_messages(state, batch)


class _PlainChat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


class _DeltaChat(TypedDict):
    messages: Annotated[list[AnyMessage], DeltaChannel(_add_messages_batch)]


CHANNELS = ("add_messages", "delta")


def conversation_graph(channel: str, checkpointer: BaseCheckpointSaver) -> CompiledStateGraph:
    """One node that answers: each invoke adds a human and an AI message."""
    state = {"add_messages": _PlainChat, "delta": _DeltaChat}[channel]

    def reply(chat: dict[str, Any]) -> dict[str, Any]:
        turn = len(chat["messages"])
        return {"messages": [AIMessage(content=text_of_size(200, seed=turn), id=f"ai-{turn}")]}

    builder = StateGraph(state)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=checkpointer)


def conversation_steps_per_turn(channel: str) -> float:
    """Checkpoints one turn writes (measured with InMemorySaver, over three turns)."""
    saver = InMemorySaver()
    graph = conversation_graph(channel, saver)
    config = thread_config("probe")
    for turn in range(3):
        graph.invoke(human_turn(turn), config)
    return len(list(saver.list(config))) / 3


def human_turn(turn: int) -> dict[str, Any]:
    return {
        "messages": [HumanMessage(content=text_of_size(200, seed=10_000 + turn), id=f"h-{turn}")]
    }


# -- raw checkpoints --------------------------------------------------------------------


@dataclass
class CheckpointChain:
    """Successive checkpoints of one thread, as a graph would put them.

    Each ``next`` changes the given channels (one new blob version each) and keeps the
    others, so a put writes only what changed, as LangGraph's own puts do.
    """

    saver: BaseCheckpointSaver
    thread_id: str
    step: int = -1
    checkpoint: Checkpoint = field(default_factory=empty_checkpoint)
    config: RunnableConfig = field(init=False)
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.config = thread_config(self.thread_id)

    def next(self, values: dict[str, Any]) -> tuple[Checkpoint, CheckpointMetadata, dict]:
        self.step += 1
        checkpoint = copy_checkpoint(self.checkpoint)
        checkpoint["id"] = str(uuid6(clock_seq=self.step))
        checkpoint["ts"] = datetime.now(timezone.utc).isoformat()
        new_versions = {}
        for channel, value in values.items():
            version = self.saver.get_next_version(checkpoint["channel_versions"].get(channel), None)
            checkpoint["channel_versions"][channel] = version
            checkpoint["channel_values"][channel] = value
            new_versions[channel] = version
        checkpoint["updated_channels"] = sorted(values)
        metadata: CheckpointMetadata = {"source": "loop", "step": self.step, "parents": {}}
        self.checkpoint = checkpoint
        self.ids.append(checkpoint["id"])
        return checkpoint, metadata, new_versions

    async def put(self, values: dict[str, Any]) -> float:
        """Put the next checkpoint; returns the seconds ``aput`` took."""
        checkpoint, metadata, new_versions = self.next(values)
        started = time.perf_counter()
        self.config = await self.saver.aput(self.config, checkpoint, metadata, new_versions)
        return time.perf_counter() - started


def small_state(step: int) -> dict[str, Any]:
    """About 1 KB of state, as a support workflow keeps between steps."""
    return {
        "messages": [
            {"role": "user", "content": text_of_size(400, seed=1)},
            {"role": "assistant", "content": text_of_size(400, seed=step)},
        ],
        "current_step": f"step-{step}",
        "completed_steps": ["intake", "billing_agent", "account_agent"][: 1 + step % 3],
    }
