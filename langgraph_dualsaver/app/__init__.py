"""The case_8842 reference app: a customer support workflow on a ``DualSaver``.

"I was charged twice, and I still can't log in." ``build_graph(checkpointer)`` returns
the compiled workflow; ``python -m langgraph_dualsaver.app.demo`` tells the whole story
on embedded Valkey and PostgreSQL.
"""

from langgraph_dualsaver.app.agents import NODES, SupportAgents, compose_reply
from langgraph_dualsaver.app.counters import RunCounters
from langgraph_dualsaver.app.graph import build_graph, new_case, new_thread_id, thread_config
from langgraph_dualsaver.app.schema import STATE_SCHEMA
from langgraph_dualsaver.app.services import (
    AUTO_REFUND_LIMIT,
    CASE_ID,
    CUSTOMERS,
    LARGE_DUPLICATE_CUSTOMER,
    LOCKED_CUSTOMER,
    NO_ISSUE_CUSTOMER,
    REQUEST_TEXT,
    SEED_CUSTOMER,
    SupportServices,
)
from langgraph_dualsaver.app.state import (
    AccountResult,
    BillingResult,
    PolicyResult,
    ReviewDecision,
    WorkflowState,
)

__all__ = [
    "AUTO_REFUND_LIMIT",
    "CASE_ID",
    "CUSTOMERS",
    "LARGE_DUPLICATE_CUSTOMER",
    "LOCKED_CUSTOMER",
    "NODES",
    "NO_ISSUE_CUSTOMER",
    "REQUEST_TEXT",
    "SEED_CUSTOMER",
    "STATE_SCHEMA",
    "AccountResult",
    "BillingResult",
    "PolicyResult",
    "ReviewDecision",
    "RunCounters",
    "SupportAgents",
    "SupportServices",
    "WorkflowState",
    "build_graph",
    "compose_reply",
    "new_case",
    "new_thread_id",
    "thread_config",
]
