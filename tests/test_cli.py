"""``dualsaver`` as a user runs it, on real servers holding case_8842 threads: the commands
that look inside threads (threads, history, show, diff, audit) and the error paths.

Most invocations go through typer's ``CliRunner`` (fast, in process); the audit runs as
a real ``python -m langgraph_dualsaver`` subprocess, as do the bad-id and unreachable-
server checks, so the console script's exit codes are the ones a shell sees.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langgraph.types import Command
from typer.testing import CliRunner, Result

from langgraph_dualsaver._loops import run_sync
from langgraph_dualsaver.app import (
    LARGE_DUPLICATE_CUSTOMER,
    LOCKED_CUSTOMER,
    SEED_CUSTOMER,
    build_graph,
    new_case,
    new_thread_id,
    thread_config,
)
from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.cli.app import app
from tests.servers import fresh_database, fresh_prefix

REPO = Path(__file__).resolve().parents[1]
DECISION = {"approved": True, "reviewer": "ana", "note": "duplicate confirmed"}


@dataclass(frozen=True)
class Store:
    """One database and one key prefix, and the environment that points the CLI at them."""

    redis_url: str
    postgres_url: str
    prefix: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "DUALSAVER_REDIS_URL": self.redis_url,
            "DUALSAVER_POSTGRES_URL": self.postgres_url,
            "DUALSAVER_PREFIX": self.prefix,
            "COLUMNS": "200",
        }

    def saver(self, **options: Any):
        return DualSaver.from_conn_string(
            self.redis_url, self.postgres_url, prefix=self.prefix, **options
        )


def invoke(store: Store, *args: str, input: str | None = None) -> Result:
    """The command, in process, as typer runs it."""
    return CliRunner().invoke(app, list(args), env=store.env, input=input)


def run_cli(store: Store | None, *args: str, env: dict[str, str] | None = None):
    """The command as a subprocess: ``python -m langgraph_dualsaver ...``."""
    full_env = {**os.environ, **(store.env if store else {}), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "langgraph_dualsaver", *args],
        env=full_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def data(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the case_8842 threads --------------------------------------------------------------


@dataclass(frozen=True)
class Cases:
    store: Store
    review: str
    """cus_6500: $650 duplicate, interrupted for a human, resumed with DECISION."""
    fork: str
    """cus_8842: auto refund, then forked at step 2 by an operator's update_state."""
    waiting: str
    """cus_7301: locked account, waiting for a human (interrupted, not resumed)."""
    fork_point: str
    original_end: str
    forked_end: str
    review_step1: str


def seed_cases(saver: DualSaver) -> Cases:
    graph = build_graph(saver)
    review, fork, waiting = (new_thread_id() for _ in range(3))
    graph.invoke(new_case(LARGE_DUPLICATE_CUSTOMER), thread_config(review))
    graph.invoke(Command(resume=DECISION), thread_config(review))

    graph.invoke(new_case(SEED_CUSTOMER), thread_config(fork))
    original_end = graph.get_state(thread_config(fork)).config["configurable"]["checkpoint_id"]
    at_step2 = next(
        s for s in graph.get_state_history(thread_config(fork)) if s.metadata["step"] == 2
    )
    correction = {"approved": False, "reason": "operator: refund by bank",
                  "requires_human_review": True}  # fmt: skip
    forked = graph.update_state(at_step2.config, {"policy": correction}, as_node="policy_agent")
    graph.invoke(None, forked)
    forked_end = graph.get_state(thread_config(fork)).config["configurable"]["checkpoint_id"]

    graph.invoke(new_case(LOCKED_CUSTOMER), thread_config(waiting))
    review_step1 = next(
        s for s in graph.get_state_history(thread_config(review)) if s.metadata["step"] == 1
    )
    saver.flush()
    return Cases(
        store=None,  # type: ignore[arg-type]
        review=review,
        fork=fork,
        waiting=waiting,
        fork_point=at_step2.config["configurable"]["checkpoint_id"],
        original_end=original_end,
        forked_end=forked_end,
        review_step1=review_step1.config["configurable"]["checkpoint_id"],
    )


@pytest.fixture(scope="module")
def cases(redis_url: str, postgres_url: str) -> Iterator[Cases]:
    """Three case_8842 threads in a database and prefix of this module's own; the tests
    that use it only read."""
    with fresh_database(postgres_url) as dsn, fresh_prefix(redis_url) as prefix:
        store = Store(redis_url, dsn, prefix)
        with store.saver() as saver:
            saver.setup()
            seeded = seed_cases(saver)
        yield Cases(**{**seeded.__dict__, "store": store})


@pytest.fixture
def store(redis_url: str, pg_dsn: str, redis_prefix: str) -> Store:
    """An empty database and prefix for one test."""
    return Store(redis_url, pg_dsn, redis_prefix)


# -- threads ----------------------------------------------------------------------------


def test_threads_lists_each_case_with_its_latest_step_and_tier(cases: Cases):
    rows = {r["thread_id"]: r for r in data(invoke(cases.store, "threads", "--json"))}
    assert set(rows) == {cases.review, cases.fork, cases.waiting}
    assert rows[cases.review]["step"] == 4
    assert rows[cases.fork]["step"] == 4
    assert rows[cases.waiting]["step"] == 2
    assert rows[cases.fork]["checkpoint_id"] == cases.forked_end
    assert {r["tier"] for r in rows.values()} == {"both"}
    table = invoke(cases.store, "threads")
    assert table.exit_code == 0
    assert all(t in table.stdout for t in rows)


def test_threads_filter_and_limit(cases: Cases):
    only = data(invoke(cases.store, "threads", "--json", "--filter", "step=2"))
    assert [r["thread_id"] for r in only] == [cases.waiting]
    none = data(invoke(cases.store, "threads", "--json", "-f", "step=2", "-f", "source=input"))
    assert none == []
    assert len(data(invoke(cases.store, "threads", "--json", "--limit", "2"))) == 2


def test_threads_shows_hot_durable_and_both_tiers(store: Store):
    hot, durable, both = (new_thread_id() for _ in range(3))
    with store.saver(background_flush=False) as saver:
        saver.setup()
        graph = build_graph(saver)
        for thread_id in (durable, both):
            graph.invoke(new_case(SEED_CUSTOMER), thread_config(thread_id))
        saver.flush()
        run_sync(saver.hot.aevict_thread(durable))  # its hot copy is gone, as after a TTL
        graph.invoke(new_case(SEED_CUSTOMER), thread_config(hot))  # not flushed yet
        tiers = {r["thread_id"]: r["tier"] for r in data(invoke(store, "threads", "--json"))}
    assert tiers == {hot: "hot", durable: "durable", both: "both"}


# -- history ----------------------------------------------------------------------------


def test_history_lists_the_chain_newest_first_with_nodes_and_the_fork(cases: Cases):
    rows = data(invoke(cases.store, "history", cases.fork, "--json"))
    ids = [r["checkpoint_id"] for r in rows]
    assert ids == sorted(ids, reverse=True)
    assert len(rows) == 8  # input, 0..4 on the original branch, 3 and 4 on the fork
    by_id = {r["checkpoint_id"]: r for r in rows}
    fork_point = by_id[cases.fork_point]
    assert fork_point["is_fork"] and fork_point["children"] == 2
    assert fork_point["nodes"] == ["account_agent", "billing_agent"]
    assert [r["checkpoint_id"] for r in rows if r["is_fork"]] == [cases.fork_point]
    update = next(r for r in rows if r["source"] == "update")
    assert update["parent_id"] == cases.fork_point and update["nodes"] == ["policy_agent"]
    assert by_id[cases.forked_end]["parent_id"] == update["checkpoint_id"]
    assert by_id[cases.original_end]["nodes"] == ["response_agent"]
    assert rows[-1]["source"] == "input" and rows[-1]["parent_id"] is None

    table = invoke(cases.store, "history", cases.fork)
    assert table.exit_code == 0
    fork_line = next(line for line in table.stdout.splitlines() if "2 children" in line)
    assert fork_line.lstrip().startswith("\u2026" + cases.fork_point[-12:])
    assert "1 fork point(s)" in table.stdout


def test_history_tree_hangs_the_update_state_branch_under_the_fork_point(cases: Cases):
    result = invoke(cases.store, "history", cases.fork, "--tree")
    assert result.exit_code == 0, result.output
    rows = data(invoke(cases.store, "history", cases.fork, "--json"))
    out = result.stdout.splitlines()
    ids = [r["checkpoint_id"] for r in rows]
    lines = {cid: next(x for x in out if cid[-12:] in x) for cid in ids}
    printed = sorted(lines, key=lambda cid: out.index(lines[cid]))
    assert printed == sorted(lines)  # oldest first: the original branch, then the fork's
    update = next(r["checkpoint_id"] for r in rows if r["source"] == "update")
    assert lines[cases.fork_point].lstrip().startswith("\u25c6")  # ◆
    assert "2 children" in lines[cases.fork_point]
    assert lines[cases.original_end].lstrip().startswith("\u2502 \u25cf")  # │ ●
    assert lines[update].lstrip().startswith("\u2514\u2500\u270e")  # └─✎
    assert "sets policy" in lines[update] and "policy_agent" in lines[update]
    assert lines[cases.forked_end].lstrip().startswith("\u25cf")  # ● under the ✎
    assert lines[cases.forked_end].rstrip().endswith("latest")
    assert "fork point: more than one checkpoint continues from it" in result.stdout


def test_history_tree_and_json_together_say_what_json_gives_instead(cases: Cases):
    result = invoke(cases.store, "history", cases.fork, "--tree", "--json")
    assert result.exit_code == 1
    assert "--json gives each checkpoint's parent_id" in result.stderr


def test_history_of_an_unknown_namespace_says_so(cases: Cases):
    result = invoke(cases.store, "history", cases.review, "--ns", "nope:1")
    assert result.exit_code == 1
    assert "has no checkpoint in namespace 'nope:1'" in result.stderr


# -- show -------------------------------------------------------------------------------


def test_show_a_finished_thread_has_its_reply_and_nothing_next(cases: Cases):
    view = data(invoke(cases.store, "show", cases.review, "--json"))
    assert view["step"] == 4 and view["next"] == [] and not view["interrupted"]
    assert view["values"]["policy"]["approved"] is True
    assert "refund of $650.00 is approved" in view["values"]["final_response"]
    assert view["values"]["messages"][-1]["type"] == "ai"
    assert not any(k.startswith("branch:to:") for k in view["values"])
    assert view["stored_in"] == ["redis", "postgresql"]
    text = invoke(cases.store, "show", cases.review)
    assert text.exit_code == 0 and "(nothing: the run is done)" in text.stdout


def test_show_a_thread_waiting_for_a_human_names_the_interrupt_and_the_next_node(cases: Cases):
    view = data(invoke(cases.store, "show", cases.waiting, "--json"))
    assert view["next"] == ["policy_agent"] and view["interrupted"]
    (write,) = view["pending_writes"]
    assert write["channel"] == "__interrupt__" and write["node"] == "policy_agent"
    assert "account is locked" in json.dumps(write["value"])
    text = invoke(cases.store, "show", cases.waiting)
    assert "resume with Command(resume=...)" in text.stdout


def test_show_a_past_checkpoint_shows_its_pending_writes_and_next_nodes(cases: Cases):
    view = data(invoke(cases.store, "show", cases.review, "-c", cases.review_step1, "--json"))
    assert view["checkpoint_id"] == cases.review_step1 and view["step"] == 1
    assert sorted(view["next"]) == ["account_agent", "billing_agent"]
    writers = {(w["node"], w["channel"]) for w in view["pending_writes"]}
    assert {("billing_agent", "billing"), ("account_agent", "account")} <= writers
    internal = data(invoke(cases.store, "show", cases.review, "-c", cases.review_step1,
                           "--json", "--all"))  # fmt: skip
    assert "branch:to:billing_agent" in internal["values"]


# -- diff -------------------------------------------------------------------------------


def test_diff_between_the_two_branches_shows_the_corrected_policy(cases: Cases):
    result = data(invoke(cases.store, "diff", cases.fork, cases.original_end, cases.forked_end,
                         "--json"))  # fmt: skip
    changes = {c["channel"]: c for c in result["changes"]}
    assert changes["policy"]["before"]["approved"] is True
    assert changes["policy"]["after"]["approved"] is False
    assert "approved: True -> False" in changes["policy"]["detail"]
    assert "final_response" in changes
    assert {"billing", "account", "customer_id"} <= set(result["unchanged"])


def test_show_and_diff_take_the_short_ids_history_prints(cases: Cases):
    short = "\u2026" + cases.review_step1[-12:]
    view = data(invoke(cases.store, "show", cases.review, "-c", short, "--json"))
    assert view["checkpoint_id"] == cases.review_step1
    result = data(invoke(cases.store, "diff", cases.fork, cases.fork_point[-8:],
                         cases.forked_end[-12:], "--json"))  # fmt: skip
    assert (result["from"], result["to"]) == (cases.fork_point, cases.forked_end)
    not_a_suffix = invoke(cases.store, "show", cases.review, "-c", cases.review_step1[-13:-1])
    assert not_a_suffix.exit_code == 1 and "has no checkpoint" in not_a_suffix.stderr


def test_diff_from_the_fork_point_lists_added_channels(cases: Cases):
    result = invoke(cases.store, "diff", cases.fork, cases.fork_point, cases.forked_end)
    assert result.exit_code == 0
    assert "final_response" in result.stdout and "added" in result.stdout
    assert "+1 item(s): ['response_agent']" in result.stdout


# -- audit ------------------------------------------------------------------------------


def test_audit_shows_billing_account_policy_the_human_decision_and_the_reply_in_order(
    cases: Cases,
):
    result = run_cli(cases.store, "audit", cases.review, "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    order = [(e["node"], e["channel"]) for e in entries]

    def first(node: str | None, channel: str) -> int:
        return order.index((node, channel))

    billing = first("billing_agent", "billing")
    account = first("account_agent", "account")
    question = first("policy_agent", "__interrupt__")
    human = first(None, "__resume__")
    policy = first("policy_agent", "policy")
    reply = first("response_agent", "final_response")
    assert max(billing, account) < question < human < policy < reply
    assert entries[human]["summary"].startswith("{approved: True, reviewer: ana")
    assert entries[billing]["step"] == entries[account]["step"] == 2
    assert entries[policy]["step"] == 3 and entries[reply]["step"] == 4
    assert not any(c.startswith("branch:to:") for _, c in order)

    table = invoke(cases.store, "audit", cases.review)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()

    def line_of(*words: str) -> int:
        return next(i for i, line in enumerate(lines) if all(w in line for w in words))

    assert (
        line_of("billing_agent", "billing")
        < line_of("policy_agent", "__interrupt__")
        < line_of("(human)", "__resume__", "approved: True")
        < line_of("policy_agent", " policy ")
        < line_of("response_agent", "final_response")
    )


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["history", "{thread}"],
        ["show", "{thread}"],
        ["audit", "{thread}"],
        ["diff", "{thread}", "a", "b"],
    ],
    ids=["history", "show", "audit", "diff"],
)
def test_an_unknown_thread_says_so_and_exits_1(cases: Cases, args: list[str]):
    result = invoke(cases.store, *[a.format(thread="case_0000-nope") for a in args])
    assert result.exit_code == 1
    assert "no thread 'case_0000-nope'" in result.stderr
    assert "`dualsaver threads` lists" in result.stderr


def test_an_unknown_checkpoint_says_so_and_exits_1(cases: Cases):
    for args in (["show", cases.review, "-c", "nope"],
                 ["diff", cases.review, cases.review_step1, "nope"]):  # fmt: skip
        result = invoke(cases.store, *args)
        assert result.exit_code == 1
        assert f"thread {cases.review!r} has no checkpoint 'nope'" in result.stderr


@pytest.mark.parametrize("command", ["history", "show", "audit", "delete", "prune"])
def test_a_thread_id_with_nul_is_refused_before_any_io(command: str):
    env_down = Store(f"redis://127.0.0.1:{closed_port()}/0", "postgresql://x@127.0.0.1:1/x", "p")
    extra = ["--keep-latest"] if command == "prune" else []
    result = invoke(env_down, command, "case\x00x", *extra)
    assert result.exit_code == 1
    assert "bad thread id: thread_id contains a NUL character" in result.stderr


def test_a_thread_id_over_the_limit_exits_1(cases: Cases):
    result = invoke(cases.store, "show", "x" * 801)
    assert result.exit_code == 1
    assert "bad thread id: thread_id is 801 bytes long; the limit is 800" in result.stderr


def test_an_unreachable_redis_is_named_with_what_to_do(cases: Cases, redis_url: str):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    result = run_cli(cases.store, "threads", env={"DUALSAVER_REDIS_URL": url})
    assert result.returncode == 1
    assert f"error: cannot reach Redis at {url}" in result.stderr
    assert "start it with `dualsaver up`, or set DUALSAVER_REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_postgres_is_named_with_what_to_do(cases: Cases):
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres"
    result = invoke(Store(cases.store.redis_url, url, cases.store.prefix), "show", cases.review)
    assert result.exit_code == 1
    assert f"cannot reach PostgreSQL at {url}" in result.stderr
    assert "DUALSAVER_POSTGRES_URL" in result.stderr


def test_a_password_never_appears_in_an_error():
    url = f"redis://:hunter2@127.0.0.1:{closed_port()}/0"
    result = invoke(Store(url, "postgresql://u:hunter2@127.0.0.1:1/x", "p"), "threads")
    assert result.exit_code == 1
    assert "hunter2" not in result.output and ":***@" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["threads", "--filter", "novalue"],
        ["threads", "--limit", "0"],
        ["prune", "t"],
        ["prune", "t", "--keep-latest", "--delete"],
        ["diff", "t", "only-one"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(args: list[str]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output


COMMANDS = ["up", "setup", "status", "threads", "history", "show", "diff", "audit", "flush",
            "prune", "delete"]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example: " in result.stdout and "dualsaver" in result.stdout
