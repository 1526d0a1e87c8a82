"""The public conformance suite (langgraph-checkpoint-conformance) on PostgresDurableSaver."""

from __future__ import annotations

import pytest

from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from tests.conformance import assert_full_conformance


@pytest.mark.parametrize("exclusive_runs", [False, True])
async def test_every_capability_detected_and_passed(pg_dsn: str, exclusive_runs: bool) -> None:
    await assert_full_conformance(
        f"PostgresDurableSaver(exclusive_runs={exclusive_runs})",
        lambda: PostgresDurableSaver.from_conn_string(pg_dsn, exclusive_runs=exclusive_runs),
    )
