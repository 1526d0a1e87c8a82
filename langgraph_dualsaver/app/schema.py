"""The case_8842 state schema's versions, and the upgrades between them.

* version 1: the first release.
* version 2: ``BillingResult`` gained ``currency`` (the reply names it).

Compile with a saver that knows it, and a case saved under version 1 (paused at a human
review, say) resumes under version 2::

    saver = DualSaver.from_env(state_schema=STATE_SCHEMA)
"""

from __future__ import annotations

from typing import Any

from langgraph_dualsaver.app.services import CURRENCY
from langgraph_dualsaver.state_upgrades import StateSchema

__all__ = ["STATE_SCHEMA", "add_billing_currency"]


def add_billing_currency(values: dict[str, Any]) -> dict[str, Any]:
    """Version 1 to 2: a billing section without ``currency`` was in US dollars, the
    only currency version 1 knew."""
    billing = values.get("billing")
    if billing is not None and "currency" not in billing:
        values["billing"] = {**billing, "currency": CURRENCY}
    return values


STATE_SCHEMA = StateSchema(version=2, upgrades={1: add_billing_currency})
"""What ``DualSaver(state_schema=...)`` takes for this app."""
