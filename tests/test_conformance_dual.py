"""langgraph-checkpoint-conformance for DualSaver: both modes, and write_behind with
the flusher paused (PostgreSQL behind Redis for the whole run)."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from langgraph_dualsaver.dual import DualSaver

VARIANTS = {
    "write_through": {"mode": "write_through"},
    "write_behind": {"mode": "write_behind"},
    "write_behind_flusher_paused": {"mode": "write_behind", "background_flush": False},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_conformance_passes_with_every_capability(
    variant: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    counter = iter(range(100))

    @checkpointer_test(name=f"DualSaver[{variant}]")
    async def factory():
        # A fresh prefix per capability suite: every suite starts from empty stores.
        prefix = f"{redis_prefix}:{next(counter)}"
        async with DualSaver.from_conn_string(
            redis_url, pg_dsn, prefix=prefix, **VARIANTS[variant]
        ) as saver:
            await saver.asetup()
            yield saver

    report = await validate(factory)
    failures = {
        name: result.failures for name, result in report.results.items() if not result.passed
    }
    assert not failures, failures
    assert {name for name, r in report.results.items() if r.detected} == {
        c.value for c in ALL_CAPABILITIES
    }
    passed = sum(r.tests_passed for r in report.results.values())
    failed = sum(r.tests_failed for r in report.results.values())
    assert (passed, failed) == (81, 0)
