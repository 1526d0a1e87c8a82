"""langgraph-checkpoint-conformance for DualSaver: both modes, and write_behind with
the flusher paused (PostgreSQL behind Redis for the whole run)."""

from __future__ import annotations

import itertools

import pytest

from langgraph_dualsaver.chain.saver import DualSaver
from tests.conformance import assert_full_conformance

VARIANTS = {
    "write_through": {"mode": "write_through"},
    "write_behind": {"mode": "write_behind"},
    "write_behind_flusher_paused": {"mode": "write_behind", "background_flush": False},
    "write_through_exclusive_runs": {"mode": "write_through", "exclusive_runs": True},
    "write_behind_exclusive_runs": {"mode": "write_behind", "exclusive_runs": True},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_every_capability_detected_and_passed(
    variant: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    suite = itertools.count()
    await assert_full_conformance(
        f"DualSaver[{variant}]",
        # A fresh prefix per capability suite: every suite starts from an empty Redis.
        lambda: DualSaver.from_conn_string(
            redis_url, pg_dsn, prefix=f"{redis_prefix}:{next(suite)}", **VARIANTS[variant]
        ),
    )
