"""``build_graph(checkpointer)``: the case_8842 workflow as a compiled LangGraph.

::

    START -> intake -+-> billing_agent -+-> policy_agent -> response_agent -> END
                     +-> account_agent -+
                     +-> response_agent            (unknown customer)

``billing_agent`` and ``account_agent`` run in the same superstep, so ``policy_agent``
(an edge from each) runs once, after both. Not a join edge (``add_edge([a, b], c)``):
``update_state(..., as_node="policy_agent")`` does not consume a join's barrier, so an
operator's correction would leave ``policy_agent`` pending beside ``response_agent``.
"""

from __future__ import annotations

import secrets
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from langgraph_dualsaver.app.agents import NodeHook, SupportAgents
from langgraph_dualsaver.app.counters import RunCounters
from langgraph_dualsaver.app.services import CASE_ID, REQUEST_TEXT, SupportServices
from langgraph_dualsaver.app.state import WorkflowState

__all__ = ["build_graph", "new_case", "new_thread_id", "thread_config"]


def _route_after_intake(state: WorkflowState) -> list[str]:
    if state.get("error"):
        return ["response_agent"]
    return ["billing_agent", "account_agent"]


def build_graph(
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    *,
    services: SupportServices | None = None,
    counters: RunCounters | None = None,
    on_enter: NodeHook | None = None,
) -> CompiledStateGraph[WorkflowState, None, WorkflowState, WorkflowState]:
    """Compile the workflow.

    Args:
        checkpointer: Any LangGraph saver; a ``DualSaver`` in the demo.
        services: The billing and account fixture (the default one if omitted).
        counters: Where node runs are counted (in memory if omitted).
        on_enter: Called as ``on_enter(node, state, config)`` when a node starts.
    """
    agents = SupportAgents(services, counters, on_enter)
    builder = StateGraph(WorkflowState)
    builder.add_node("intake", agents.intake)
    builder.add_node("billing_agent", agents.billing_agent)
    builder.add_node("account_agent", agents.account_agent)
    builder.add_node("policy_agent", agents.policy_agent)
    builder.add_node("response_agent", agents.response_agent)
    builder.add_edge(START, "intake")
    builder.add_conditional_edges(
        "intake", _route_after_intake, ["billing_agent", "account_agent", "response_agent"]
    )
    builder.add_edge("billing_agent", "policy_agent")
    builder.add_edge("account_agent", "policy_agent")
    builder.add_edge("policy_agent", "response_agent")
    builder.add_edge("response_agent", END)
    return builder.compile(checkpointer=checkpointer)


def new_case(customer_id: str, request_text: str = REQUEST_TEXT) -> WorkflowState:
    """The input of a new case: the customer's message and who wrote it."""
    return {
        "customer_id": customer_id,
        "request_text": request_text,
        "messages": [HumanMessage(content=request_text)],
        "completed_steps": [],
    }


def new_thread_id(prefix: str = CASE_ID) -> str:
    """``case_8842-1a2b3c4d``: a fresh thread per run, so reruns never collide."""
    return f"{prefix}-{secrets.token_hex(4)}"


def thread_config(thread_id: str, **configurable: Any) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, **configurable}}
