"""The nodes of the case_8842 workflow: deterministic, no LLM, no network.

Each node counts its run (``RunCounters``, outside the graph state), then calls the
fixture services. Where a production agent would call a model, a comment says so; the
graph, the state and the checkpointing would not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import interrupt

from langgraph_dualsaver.app.counters import RunCounters
from langgraph_dualsaver.app.services import AUTO_REFUND_LIMIT, SupportServices
from langgraph_dualsaver.app.state import (
    AccountResult,
    BillingResult,
    PolicyResult,
    ReviewDecision,
    WorkflowState,
)

__all__ = ["NODES", "NodeHook", "SupportAgents", "compose_reply", "thread_id_of"]

NodeHook = Callable[[str, WorkflowState, RunnableConfig], None]
"""Called at the start of every node, before it counts its run: tests and the demo use
it to inject a failure or to hold a node while its process is killed."""

NODES = ("intake", "billing_agent", "account_agent", "policy_agent", "response_agent")


def thread_id_of(config: RunnableConfig) -> str:
    return str(config.get("configurable", {}).get("thread_id", ""))


def _money(amount: float, currency: str = "USD") -> str:
    return f"${amount:,.2f}" if currency == "USD" else f"{amount:,.2f} {currency}"


class SupportAgents:
    """The five nodes, bound to their services, counters and optional hook."""

    def __init__(
        self,
        services: SupportServices | None = None,
        counters: RunCounters | None = None,
        on_enter: NodeHook | None = None,
    ) -> None:
        self.services = services or SupportServices()
        self.counters = counters or RunCounters()
        self.on_enter = on_enter

    def _enter(self, node: str, state: WorkflowState, config: RunnableConfig) -> None:
        if self.on_enter is not None:
            self.on_enter(node, state, config)
        self.counters.increment(thread_id_of(config), node)

    # -- nodes ------------------------------------------------------------------------

    def intake(self, state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
        """Check the customer exists; the router then fans out or goes straight to reply."""
        self._enter("intake", state, config)
        customer = state.get("customer_id", "")
        error = None if self.services.knows(customer) else f"unknown customer {customer!r}"
        return {"current_step": "intake", "completed_steps": ["intake"], "error": error}

    def billing_agent(self, state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
        """Look the charges up and flag duplicates. Writes ``billing`` only.

        An LLM agent would go here, with the billing service as a tool
        (``model.bind_tools([lookup_charges])``); the fixture makes the outcome fixed.
        """
        self._enter("billing_agent", state, config)
        billing: BillingResult = self.services.billing.review(state["customer_id"])
        return {"billing": billing, "completed_steps": ["billing_agent"]}

    def account_agent(self, state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
        """Check the login and send a reset if the account is open. Writes ``account`` only."""
        self._enter("account_agent", state, config)
        account: AccountResult = self.services.accounts.review(state["customer_id"])
        return {"account": account, "completed_steps": ["account_agent"]}

    def policy_agent(self, state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
        """Apply the refund rules; a large refund or a locked account goes to a human.

        ``interrupt()`` stops the run here and the checkpointer keeps it; on
        ``Command(resume=decision)`` LangGraph runs this node again from the top and
        ``interrupt()`` returns ``decision``.
        """
        self._enter("policy_agent", state, config)
        billing = state.get("billing")
        account = state.get("account")
        locked = bool(account and account["account_locked"])
        amount = billing["duplicate_amount"] if billing and billing["refund_eligible"] else 0.0
        reasons = []
        if amount >= AUTO_REFUND_LIMIT:
            reasons.append(
                f"refund of {_money(amount)} is over the {_money(AUTO_REFUND_LIMIT)} limit"
            )
        if locked:
            reasons.append("account is locked")
        if reasons:
            question: dict[str, Any] = {
                "question": "Approve this case?",
                "customer_id": state.get("customer_id"),
                "refund_amount": amount,
                "transaction_ids": billing["transaction_ids"] if billing else [],
                "reasons": reasons,
            }
            decision = interrupt(question)
            while (problem := _decision_problem(decision)) is not None:
                # Ask again rather than fail: a failed node would keep the bad answer
                # as its resume value, and every later resume would fail the same way.
                decision = interrupt({**question, "error": problem})
            approved, note = _read_decision(decision)
            policy = PolicyResult(
                approved=approved,
                reason=f"human review ({'; '.join(reasons)}): {note}",
                requires_human_review=True,
            )
        elif amount > 0:
            policy = PolicyResult(
                approved=True,
                reason=f"duplicate of {_money(amount)} is under the "
                f"{_money(AUTO_REFUND_LIMIT)} auto-refund limit",
                requires_human_review=False,
            )
        else:
            policy = PolicyResult(
                approved=False, reason="no duplicate charge found", requires_human_review=False
            )
        return {"policy": policy, "current_step": "policy", "completed_steps": ["policy_agent"]}

    def response_agent(self, state: WorkflowState, config: RunnableConfig) -> dict[str, Any]:
        """Compose the reply from every section.

        With a model: ``model.invoke([system_prompt, *state["messages"], facts])``, where
        ``facts`` is what this function writes; the reply would then be its output.
        """
        self._enter("response_agent", state, config)
        reply = compose_reply(state)
        return {
            "final_response": reply,
            "messages": [AIMessage(content=reply, name="response_agent")],
            "current_step": "done",
            "completed_steps": ["response_agent"],
        }


def _decision_problem(decision: Any) -> str | None:
    if isinstance(decision, bool):
        return None
    if isinstance(decision, dict) and isinstance(decision.get("approved"), bool):
        return None
    return (
        "resume with Command(resume={'approved': True or False, 'reviewer': ..., "
        f"'note': ...}}), got {decision!r}"
    )


def _read_decision(decision: bool | ReviewDecision) -> tuple[bool, str]:
    """Accept ``{"approved": bool, "reviewer": ..., "note": ...}`` or a bare bool."""
    if isinstance(decision, bool):
        return decision, "approved" if decision else "rejected"
    who = decision.get("reviewer", "reviewer")
    note = decision.get("note") or ("approved" if decision["approved"] else "rejected")
    return decision["approved"], f"{who}: {note}"


def compose_reply(state: WorkflowState) -> str:
    """The customer-facing answer, built only from the state's sections."""
    if state.get("error"):
        return (
            "Sorry, we could not find an account for you. "
            "Please reply with the email address you signed up with."
        )
    billing = state.get("billing")
    account = state.get("account")
    policy = state.get("policy")
    parts: list[str] = []
    if billing and billing["duplicate_detected"]:
        txns = ", ".join(billing["transaction_ids"])
        amount = _money(billing["duplicate_amount"], billing["currency"])
        if policy and policy["approved"]:
            parts.append(
                f"You were charged twice ({txns}). A refund of {amount} is approved "
                "and will reach your card within 5 business days."
            )
        else:
            parts.append(
                f"You were charged twice ({txns}), but the refund of {amount} was not "
                f"approved: {policy['reason'] if policy else 'no decision'}."
            )
    else:
        parts.append("I checked your recent charges and found no duplicate.")
    if account and account["account_locked"]:
        if policy and policy["approved"]:
            parts.append("A specialist reviewed your locked account and is unlocking it.")
        else:
            parts.append("Your account stays locked for your security; we will call you.")
    elif account and account["reset_sent"]:
        parts.append("I sent a password reset link to your email address.")
    else:
        parts.append("Your login looks fine.")
    return " ".join(parts)
