"""The public conformance suite (langgraph-checkpoint-conformance) on PostgresDurableSaver."""

from __future__ import annotations

from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from tests.conformance import assert_full_conformance


async def test_every_capability_detected_and_passed(pg_dsn: str) -> None:
    await assert_full_conformance(
        "PostgresDurableSaver", lambda: PostgresDurableSaver.from_conn_string(pg_dsn)
    )
