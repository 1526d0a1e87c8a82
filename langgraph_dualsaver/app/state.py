"""The typed state of the case_8842 workflow.

Every section is a ``TypedDict``: at run time a plain ``dict`` of ``str``, ``bool``,
``float`` and ``list``, so LangGraph's default serde stores it as msgpack without any
deserialization allowlist (a dataclass or pydantic model would be revived by class path,
which newer langgraph-checkpoint versions warn about or block unless allowlisted).
"""

from __future__ import annotations

import operator
from typing import Annotated

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

__all__ = [
    "AccountResult",
    "BillingResult",
    "Charge",
    "PolicyResult",
    "ReviewDecision",
    "WorkflowState",
]


class Charge(TypedDict):
    """One card charge, as the billing service reports it."""

    transaction_id: str
    amount: float
    date: str
    description: str


class BillingResult(TypedDict):
    """Written by ``billing_agent`` only.

    State schema version 2 added ``currency``; ``app.schema.STATE_SCHEMA`` upgrades a
    case saved under version 1 (without it) when it is read.
    """

    duplicate_detected: bool
    duplicate_amount: float
    transaction_ids: list[str]
    charges: list[Charge]
    refund_eligible: bool
    currency: str
    """ISO 4217 code of ``duplicate_amount``, e.g. ``"USD"``."""


class AccountResult(TypedDict):
    """Written by ``account_agent`` only."""

    issue_found: bool
    reset_sent: bool
    account_locked: bool


class PolicyResult(TypedDict):
    """Written by ``policy_agent`` (or by an operator through ``update_state``)."""

    approved: bool
    reason: str
    requires_human_review: bool


class ReviewDecision(TypedDict, total=False):
    """What a human reviewer sends back through ``Command(resume=...)``."""

    approved: bool
    reviewer: str
    note: str


class WorkflowState(TypedDict, total=False):
    """The whole case. Parallel nodes write disjoint keys; ``messages`` and
    ``completed_steps`` have reducers, so writes from one superstep merge."""

    messages: Annotated[list[AnyMessage], add_messages]
    customer_id: str
    request_text: str
    billing: BillingResult | None
    account: AccountResult | None
    policy: PolicyResult | None
    current_step: str
    completed_steps: Annotated[list[str], operator.add]
    final_response: str
    error: str | None
