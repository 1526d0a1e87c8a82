"""Run langgraph-checkpoint-conformance on a saver and assert it passes in full."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

# The suite's size in langgraph-checkpoint-conformance 0.0.2: put 17, put_writes 10,
# get_tuple 10, list 16, delete_thread 5, delete_for_runs 7, copy_thread 8, prune 8.
EXPECTED_TESTS = 81


async def assert_full_conformance(
    name: str, open_saver: Callable[[], AbstractAsyncContextManager[BaseCheckpointSaver]]
) -> None:
    """Every capability detected and passed, 81 tests passed, none failed.

    ``open_saver`` is called once per capability suite, for a fresh saver.
    """

    @checkpointer_test(name=name)
    async def factory() -> AsyncIterator[BaseCheckpointSaver]:
        async with open_saver() as saver:
            await saver.asetup()
            yield saver

    report = await validate(factory)
    report.print_report()
    passed = sum(r.tests_passed for r in report.results.values())
    failed = sum(r.tests_failed for r in report.results.values())
    print(f"conformance: {passed} passed, {failed} failed, level {report.conformance_level()}")

    assert set(report.results) == {c.value for c in ALL_CAPABILITIES}
    failures = {cap: r.failures for cap, r in report.results.items() if not r.passed}
    assert not failures, failures
    assert all(r.detected and r.passed for r in report.results.values())
    assert report.conformance_level() == "FULL"
    assert (passed, failed) == (EXPECTED_TESTS, 0)
