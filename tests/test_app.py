"""The case_8842 reference app on a real checkpointer: outcomes per customer, the
parallel superstep, resume after a failure, human review, time travel, update_state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command

from langgraph_dualsaver.app import (
    AUTO_REFUND_LIMIT,
    LARGE_DUPLICATE_CUSTOMER,
    LOCKED_CUSTOMER,
    NO_ISSUE_CUSTOMER,
    SEED_CUSTOMER,
    RunCounters,
    SupportServices,
    WorkflowState,
    build_graph,
    new_case,
    new_thread_id,
    thread_config,
)
from langgraph_dualsaver.app.agents import thread_id_of
from tests.factories import open_saver
from tests.helpers import wait_until

APP_SAVER_KINDS = ["dual_write_behind", "dual_write_through"]


@pytest.fixture(params=APP_SAVER_KINDS)
async def checkpointer(
    request: pytest.FixtureRequest, redis_url: str, pg_dsn: str, redis_prefix: str
) -> AsyncIterator[BaseCheckpointSaver]:
    async with open_saver(
        request.param, redis_url=redis_url, pg_dsn=pg_dsn, prefix=redis_prefix
    ) as saver:
        yield saver


APPROVE = {"approved": True, "reviewer": "ana@support", "note": "confirmed with the bank"}
REJECT = {"approved": False, "reviewer": "ana@support", "note": "charge is legitimate"}


# -- the fixture services, pure -------------------------------------------------------


@pytest.mark.pure
def test_seed_customer_has_one_duplicate_of_49_99() -> None:
    billing = SupportServices().billing.review(SEED_CUSTOMER)
    assert billing["duplicate_detected"] and billing["refund_eligible"]
    assert billing["duplicate_amount"] == 49.99
    assert billing["transaction_ids"] == ["txn_100", "txn_101"]
    assert len(billing["charges"]) == 3  # last month's charge is not a duplicate


@pytest.mark.pure
def test_fixture_customers_cover_every_policy_path() -> None:
    services = SupportServices()
    assert services.billing.review(LARGE_DUPLICATE_CUSTOMER)["duplicate_amount"] > (
        AUTO_REFUND_LIMIT
    )
    assert services.accounts.review(LOCKED_CUSTOMER) == {
        "issue_found": True,
        "reset_sent": False,
        "account_locked": True,
    }
    assert not services.billing.review(NO_ISSUE_CUSTOMER)["duplicate_detected"]
    assert services.accounts.review(NO_ISSUE_CUSTOMER)["issue_found"] is False
    assert not services.knows("cus_unknown")


@pytest.mark.pure
def test_run_counters_in_a_file_add_up_across_instances(tmp_path: Path) -> None:
    first, second = RunCounters(tmp_path / "runs.json"), RunCounters(tmp_path / "runs.json")
    first.increment("t1", "billing_agent")
    second.increment("t1", "billing_agent")
    second.increment("t2", "account_agent")
    assert first.get("t1") == {"billing_agent": 2}
    assert first.get("t2") == {"account_agent": 1}
    first.reset("t1")
    assert second.get("t1") == {}


# -- the graph on the real saver --------------------------------------------------------


@pytest.mark.parametrize(
    ("customer", "needs_review", "approved", "reply_says"),
    [
        (SEED_CUSTOMER, False, True, "A refund of $49.99 is approved"),
        (LARGE_DUPLICATE_CUSTOMER, True, True, "A refund of $650.00 is approved"),
        (LOCKED_CUSTOMER, True, True, "reviewed your locked account"),
        (NO_ISSUE_CUSTOMER, False, False, "found no duplicate"),
        ("cus_unknown", False, None, "could not find an account"),
    ],
)
async def test_each_customer_ends_in_the_expected_state(
    checkpointer: BaseCheckpointSaver,
    customer: str,
    needs_review: bool,
    approved: bool | None,
    reply_says: str,
) -> None:
    graph = build_graph(checkpointer)
    config = thread_config(new_thread_id())
    await graph.ainvoke(new_case(customer), config)
    waiting = await graph.aget_state(config)
    assert waiting.next == (("policy_agent",) if needs_review else ())
    if needs_review:
        await graph.ainvoke(Command(resume=APPROVE), config)
    final = (await graph.aget_state(config)).values
    assert final["current_step"] == "done"
    assert reply_says in final["final_response"]
    assert final["messages"][-1].content == final["final_response"]
    if approved is None:
        assert final["error"] and "billing" not in final
        assert final["completed_steps"] == ["intake", "response_agent"]
    else:
        assert final["policy"]["approved"] is approved
        assert final["policy"]["requires_human_review"] is needs_review
        assert sorted(final["completed_steps"]) == sorted(
            ["intake", "billing_agent", "account_agent", "policy_agent", "response_agent"]
        )


async def test_billing_and_account_run_in_one_superstep(
    checkpointer: BaseCheckpointSaver,
) -> None:
    graph = build_graph(checkpointer)
    config = thread_config(new_thread_id())
    await graph.ainvoke(new_case(SEED_CUSTOMER), config)
    history = [snapshot async for snapshot in graph.aget_state_history(config)]
    fan_out = [s for s in history if set(s.next) == {"billing_agent", "account_agent"}]
    assert len(fan_out) == 1, [s.next for s in history]
    before = fan_out[0]
    # Both tasks of that one step finished and left their writes on its checkpoint...
    assert {t.name for t in before.tasks} == {"billing_agent", "account_agent"}
    assert all(t.result for t in before.tasks)
    # ...and the very next checkpoint, one step later, holds both sections.
    after = next(s for s in history if s.parent_config and s.parent_config == before.config)
    assert after.metadata["step"] == before.metadata["step"] + 1
    assert after.values["billing"]["duplicate_detected"] is True
    assert after.values["account"]["reset_sent"] is True
    assert after.next == ("policy_agent",)


def billing_writes_saved(saver: BaseCheckpointSaver, config: RunnableConfig) -> bool:
    latest = saver.get_tuple(thread_config(thread_id_of(config)))
    return latest is not None and any(w[1] == "billing" for w in latest.pending_writes or ())


class AccountOutage(RuntimeError):
    """The injected failure: the identity provider is down, once."""


async def test_resume_after_a_failed_node_does_not_rerun_the_node_that_succeeded(
    checkpointer: BaseCheckpointSaver,
) -> None:
    attempts: list[str] = []

    def fail_account_once(node: str, state: WorkflowState, config: RunnableConfig) -> None:
        if node != "account_agent":
            return
        attempts.append(node)
        if len(attempts) > 1:
            return
        # Fail only once billing_agent has finished and its writes are saved, so the
        # failure really comes after billing succeeded.
        wait_until(lambda: billing_writes_saved(checkpointer, config), "billing's writes")
        raise AccountOutage("identity provider timed out")

    counters = RunCounters()
    graph = build_graph(checkpointer, counters=counters, on_enter=fail_account_once)
    config = thread_config(new_thread_id())
    with pytest.raises(AccountOutage):
        await graph.ainvoke(new_case(SEED_CUSTOMER), config)
    failed = await graph.aget_state(config)
    # billing_agent's writes wait on the checkpoint; only account_agent is left to run.
    assert failed.next == ("account_agent",)
    assert {t.name: bool(t.result) for t in failed.tasks} == {
        "billing_agent": True,
        "account_agent": False,
    }
    assert "account" not in failed.values
    assert counters.get(config["configurable"]["thread_id"]) == {
        "intake": 1,
        "billing_agent": 1,
    }

    final = await graph.ainvoke(None, config)

    assert counters.get(config["configurable"]["thread_id"]) == {
        "intake": 1,
        "billing_agent": 1,  # its pending writes were used, not a second run
        "account_agent": 1,
        "policy_agent": 1,
        "response_agent": 1,
    }
    assert attempts == ["account_agent", "account_agent"]
    assert final["billing"]["transaction_ids"] == ["txn_100", "txn_101"]
    assert final["policy"]["approved"] is True


async def test_human_review_interrupts_and_resumes_with_the_decision(
    checkpointer: BaseCheckpointSaver,
) -> None:
    counters = RunCounters()
    graph = build_graph(checkpointer, counters=counters)
    config = thread_config(new_thread_id())
    await graph.ainvoke(new_case(LARGE_DUPLICATE_CUSTOMER), config)

    waiting = await graph.aget_state(config)
    assert waiting.next == ("policy_agent",)
    (question,) = [i.value for t in waiting.tasks for i in t.interrupts]
    assert question["refund_amount"] == 650.00
    assert question["transaction_ids"] == ["txn_200", "txn_201"]
    assert "over the $500.00 limit" in question["reasons"][0]

    # A malformed answer is not taken: the same question comes back, saying why.
    await graph.ainvoke(Command(resume={"reviewer": "ana"}), config)
    asked_again = await graph.aget_state(config)
    assert asked_again.next == ("policy_agent",)
    (again,) = [i.value for t in asked_again.tasks for i in t.interrupts]
    assert "'approved': True or False" in again["error"]
    assert again["refund_amount"] == 650.00

    final = await graph.ainvoke(Command(resume=REJECT), config)
    assert final["policy"] == {
        "approved": False,
        "reason": "human review (refund of $650.00 is over the $500.00 limit): "
        "ana@support: charge is legitimate",
        "requires_human_review": True,
    }
    assert "was not approved" in final["final_response"]
    thread = config["configurable"]["thread_id"]
    # interrupt() re-runs the node from the top on resume (and on the bad resume)
    assert counters.get(thread)["policy_agent"] == 3
    assert counters.get(thread)["billing_agent"] == 1


async def test_fork_from_the_checkpoint_after_billing_changes_the_outcome(
    checkpointer: BaseCheckpointSaver,
) -> None:
    graph = build_graph(checkpointer)
    config = thread_config(new_thread_id())
    original = await graph.ainvoke(new_case(SEED_CUSTOMER), config)
    original_end = await graph.aget_state(config)
    history = [s async for s in graph.aget_state_history(config)]
    after_billing = next(s for s in history if s.next == ("policy_agent",))

    billing = {**after_billing.values["billing"], "duplicate_amount": 650.00}
    fork_config = await graph.aupdate_state(
        after_billing.config, {"billing": billing}, as_node="billing_agent"
    )
    await graph.ainvoke(None, fork_config)

    forked = await graph.aget_state(config)  # the thread's latest is the fork now
    assert forked.next == ("policy_agent",)
    assert forked.values["billing"]["duplicate_amount"] == 650.00
    assert forked.tasks[0].interrupts[0].value["refund_amount"] == 650.00
    assert "final_response" not in forked.values
    fork_parent = await graph.aget_state(fork_config)
    assert (
        fork_parent.parent_config["configurable"]["checkpoint_id"]
        == (after_billing.config["configurable"]["checkpoint_id"])
    )
    # The original branch is intact.
    again = await graph.aget_state(original_end.config)
    assert again.values["final_response"] == original["final_response"]
    assert again.values["billing"]["duplicate_amount"] == 49.99
    assert len([s async for s in graph.aget_state_history(config)]) == len(history) + 1


async def test_update_state_as_policy_agent_corrects_the_decision_and_continues(
    checkpointer: BaseCheckpointSaver,
) -> None:
    counters = RunCounters()
    graph = build_graph(checkpointer, counters=counters)
    config = thread_config(new_thread_id())
    await graph.ainvoke(new_case(SEED_CUSTOMER), config)

    correction = {
        "approved": False,
        "reason": "refund already issued through a chargeback",
        "requires_human_review": False,
    }
    corrected = await graph.aupdate_state(config, {"policy": correction}, as_node="policy_agent")
    snapshot = await graph.aget_state(corrected)
    assert snapshot.next == ("response_agent",)
    assert snapshot.metadata["source"] == "update"
    final = await graph.ainvoke(None, corrected)

    assert final["policy"] == correction
    assert "chargeback" in final["final_response"]
    thread = config["configurable"]["thread_id"]
    assert counters.get(thread)["policy_agent"] == 1  # the correction did not run it
    assert counters.get(thread)["response_agent"] == 2
