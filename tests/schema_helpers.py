"""The case_8842 app as its first release (state schema version 1) deployed it, for the
state-schema tests and their subprocesses."""

from __future__ import annotations

from typing import Any

from langgraph_dualsaver.app.services import BillingService, SupportServices
from langgraph_dualsaver.app.state import BillingResult
from langgraph_dualsaver.state_upgrades import StateSchema

V1 = StateSchema(version=1)
"""What the first release stamped."""

DECISION = {"approved": True, "reviewer": "ana", "note": "duplicate confirmed"}


class V1BillingService(BillingService):
    """Version 1's billing section: no ``currency``."""

    def review(self, customer_id: str) -> BillingResult:
        section: dict[str, Any] = dict(super().review(customer_id))
        del section["currency"]
        return section  # type: ignore[return-value]


def v1_services() -> SupportServices:
    return SupportServices(billing=V1BillingService())
