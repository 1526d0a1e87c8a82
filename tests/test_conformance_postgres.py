"""The public conformance suite (langgraph-checkpoint-conformance) on PostgresDurableSaver."""

from __future__ import annotations

from collections.abc import AsyncIterator

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from langgraph_dualsaver.postgres import PostgresDurableSaver

# The suite's size in langgraph-checkpoint-conformance 0.0.2: put 17, put_writes 10,
# get_tuple 10, list 16, delete_thread 5, delete_for_runs 7, copy_thread 8, prune 8.
EXPECTED_TESTS = 81


async def test_every_capability_detected_and_passed(pg_dsn: str) -> None:
    @checkpointer_test(name="PostgresDurableSaver")
    async def factory() -> AsyncIterator[PostgresDurableSaver]:
        async with PostgresDurableSaver.from_conn_string(pg_dsn) as saver:
            await saver.asetup()
            yield saver

    report = await validate(factory)
    report.print_report()
    passed = sum(r.tests_passed for r in report.results.values())
    failed = sum(r.tests_failed for r in report.results.values())
    print(f"conformance: {passed} passed, {failed} failed, level {report.conformance_level()}")

    assert set(report.results) == {c.value for c in ALL_CAPABILITIES}
    failures = {name: r.failures for name, r in report.results.items() if not r.passed}
    assert not failures, failures
    assert all(r.detected and r.passed for r in report.results.values())
    assert report.conformance_level() == "FULL"
    assert (passed, failed) == (EXPECTED_TESTS, 0)
