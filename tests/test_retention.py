"""Retention (README, "Retention"): each rule, each never-rule, the bounds, the flusher
enforcing it, and ``dualsaver prune --idle/--keep-last/--max-age``, on real Valkey and
PostgreSQL; the chain's tests run in both modes.

Age is what PostgreSQL's ``created_at`` says (and, for the hot tier's check before a
delete, the thread's registry score): tests that need old checkpoints set those to the
past instead of waiting days.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from langgraph_dualsaver import ConfigurationError, DualSaver, PostgresDurableSaver, Retention
from langgraph_dualsaver.chain.outbox import clock_position
from langgraph_dualsaver.durable.retention import Sweeper
from langgraph_dualsaver.records import checkpoint_record, writes_record
from langgraph_dualsaver.retention import parse_duration
from tests.cluster import valkey_cluster
from tests.helpers import (
    config,
    delta_thread,
    durable_ids,
    eventually,
    fetch,
    ids_of,
    put_chain,
    wait_until,
)
from tests.test_cli import REPO, Store, data, invoke

DAY = timedelta(days=1)
MODES = ["write_behind", "write_through"]


@pytest.fixture
async def durable(pg_dsn: str) -> AsyncIterator[PostgresDurableSaver]:
    async with PostgresDurableSaver.from_conn_string(pg_dsn) as saver:
        await saver.asetup()
        yield saver


@pytest.fixture(params=MODES)
async def chain(
    request: pytest.FixtureRequest, redis_url: str, pg_dsn: str, redis_prefix: str
) -> AsyncIterator[DualSaver]:
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, mode=request.param, background_flush=False
    ) as saver:
        await saver.asetup()
        yield saver


async def backdate(dsn: str, thread_id: str, age: timedelta, ids: list[str] | None = None) -> None:
    """Make checkpoints of a thread (all, or ``ids``) ``age`` old in PostgreSQL."""
    await fetch(
        dsn,
        "UPDATE dualsaver_checkpoints SET created_at = now() - $2::interval "
        "WHERE thread_id = $1 AND ($3::text[] IS NULL OR checkpoint_id = ANY($3))",
        thread_id, age, ids,
    )  # fmt: skip


async def backdate_hot(saver: DualSaver, thread_id: str, age: timedelta) -> None:
    """The thread's last checkpoint write in Redis (its registry score), ``age`` ago."""
    client = await saver.hot.aclient()
    registry = saver.hot.thread_keys(thread_id).registry
    await client.zadd(registry, {thread_id.encode(): time.time() - age.total_seconds()}, xx=True)


async def hot_ids(saver: DualSaver, thread_id: str, ns: str = "") -> list[str]:
    found = [t async for t in saver.hot.alist(config(thread_id, ns=ns))]
    return sorted(t.config["configurable"]["checkpoint_id"] for t in found)


async def rows(dsn: str, table: str, thread_id: str) -> list[Any]:
    return list(await fetch(dsn, f"SELECT * FROM {table} WHERE thread_id = $1", thread_id))


async def put_with_writes(saver: Any, thread_id: str, count: int) -> list[str]:
    saved = await put_chain(saver, thread_id, count)
    for step, cfg in enumerate(saved):
        await saver.aput_writes(cfg, [("x", f"w{step}")], f"task-{step}")
    return ids_of(saved)


# -- the policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "at least one of idle=, keep_last= or max_age="),
        ({"keep_last": 0}, "keep_last must be an int of 1 or more or None, got 0"),
        ({"keep_last": True}, "keep_last must be an int of 1 or more"),
        ({"idle": timedelta(0)}, "idle must be a positive timedelta or None"),
        ({"max_age": 7}, "max_age must be a positive timedelta or None, got 7"),
        ({"idle": DAY, "idle_action": "purge"}, "idle_action must be one of delete, keep_latest"),
        ({"keep_last": 1, "delete_waiting": "yes"}, "delete_waiting must be True or False"),
        ({"keep_last": 1, "rows_per_transaction": 0}, "rows_per_transaction must be an int"),
        ({"keep_last": 1, "interval": timedelta(0)}, "interval must be a positive timedelta"),
    ],
)
def test_a_bad_policy_is_refused_saying_what_is_wrong(options: dict[str, Any], message: str):
    with pytest.raises(ConfigurationError, match=message):
        Retention(**options)


def test_durations_read_as_the_cli_writes_them():
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("", "30", "30x", "d", "-1d", "0s", "1d 2h"):
        with pytest.raises(ConfigurationError, match="duration"):
            parse_duration(bad)


async def test_a_chain_refuses_what_is_not_a_retention(redis_url: str, pg_dsn: str):
    with pytest.raises(ConfigurationError, match="retention must be a Retention or None"):
        DualSaver.from_conn_string(redis_url, pg_dsn, retention={"keep_last": 5})


# -- the rules, in PostgreSQL -----------------------------------------------------------------


async def test_keep_last_removes_older_checkpoints_with_their_writes_and_blobs(
    durable: PostgresDurableSaver, pg_dsn: str
):
    ids = await put_with_writes(durable, "t", 5)
    bystander = await put_with_writes(durable, "short", 2)
    report = await durable.aretain(Retention(keep_last=2))
    assert await durable_ids(pg_dsn, "t") == ids[-2:]
    assert await durable_ids(pg_dsn, "short") == bystander
    assert {r["checkpoint_id"] for r in await rows(pg_dsn, "dualsaver_writes", "t")} == set(
        ids[-2:]
    )
    kept = await rows(pg_dsn, "dualsaver_checkpoints", "t")
    referenced = {pair for r in kept for pair in json.loads(r["channel_versions"]).items()}
    blobs = {(r["channel"], r["version"]) for r in await rows(pg_dsn, "dualsaver_blobs", "t")}
    assert blobs == referenced and len(blobs) == 2  # the removed ones' blobs went
    [outcome] = report.outcomes
    assert (outcome.thread_id, outcome.action, outcome.checkpoints, outcome.done) == (
        "t", "prune", 3, True,
    )  # fmt: skip
    latest = await durable.aget_tuple(config("t"))
    assert latest is not None and latest.checkpoint["channel_values"] == {"x": "v4"}
    assert latest.pending_writes == [("task-4", "x", "w4")]


async def test_max_age_removes_old_checkpoints_but_never_a_namespace_latest(
    durable: PostgresDurableSaver, pg_dsn: str
):
    ids = await put_with_writes(durable, "t", 4)
    child = ids_of(await put_chain(durable, "t", 2, start=config("t", ns="child:1")))
    await backdate(pg_dsn, "t", 2 * DAY, ids[:2])  # two old, two young in the root
    await durable.aretain(Retention(max_age=timedelta(hours=1)))
    assert await durable_ids(pg_dsn, "t") == sorted(ids[2:] + child)

    await backdate(pg_dsn, "t", 2 * DAY)  # now everything is old
    await durable.aretain(Retention(max_age=timedelta(hours=1)))
    assert await durable_ids(pg_dsn, "t") == sorted([ids[-1], child[-1]])


async def test_idle_threads_are_deleted_or_kept_to_their_latest(
    durable: PostgresDurableSaver, pg_dsn: str
):
    await put_with_writes(durable, "idle-a", 3)
    idle_b = await put_with_writes(durable, "idle-b", 3)
    active = await put_with_writes(durable, "active", 3)
    await backdate(pg_dsn, "idle-a", 40 * DAY)
    await backdate(pg_dsn, "idle-b", 40 * DAY)
    await durable.aretain(Retention(idle=30 * DAY, idle_action="keep_latest"))
    assert await durable_ids(pg_dsn, "idle-b") == idle_b[-1:]
    assert await durable_ids(pg_dsn, "active") == active

    report = await durable.aretain(Retention(idle=30 * DAY, idle_action="delete"))
    assert await durable_ids(pg_dsn, "idle-a") == []
    assert await durable_ids(pg_dsn, "idle-b") == []
    for table in ("dualsaver_writes", "dualsaver_blobs"):
        assert await rows(pg_dsn, table, "idle-a") == []
    assert await durable_ids(pg_dsn, "active") == active
    assert sorted(o.thread_id for o in report.outcomes if o.action == "delete") == [
        "idle-a", "idle-b",
    ]  # fmt: skip


async def test_delta_channel_ancestors_a_kept_checkpoint_needs_stay(
    durable: PostgresDurableSaver, pg_dsn: str
):
    graph = await delta_thread(durable, "delta")
    before = await graph.aget_state(config("delta"))
    counters = before.metadata["counters_since_delta_snapshot"]["items"]
    total = len(await durable_ids(pg_dsn, "delta"))
    await durable.aretain(Retention(keep_last=1))
    assert len(await durable_ids(pg_dsn, "delta")) == counters[0] + 1 < total
    after = await graph.aget_state(config("delta"))
    assert after.values == before.values


async def test_an_interrupt_not_yet_resumed_is_kept_even_off_the_latest(
    durable: PostgresDurableSaver, pg_dsn: str
):
    first, asked = await put_chain(durable, "fork", 2)
    await durable.aput_writes(asked, [("__interrupt__", "approve?")], "task-ask")
    # A branch from the first checkpoint: the interrupted one is no longer the latest.
    await put_chain(durable, "fork", 1, start=first)
    branch = (await durable_ids(pg_dsn, "fork"))[-1]
    await backdate(pg_dsn, "fork", 2 * DAY)
    await durable.aretain(Retention(keep_last=1, max_age=timedelta(hours=1)))
    asked_id = asked["configurable"]["checkpoint_id"]
    assert await durable_ids(pg_dsn, "fork") == sorted([asked_id, branch])
    kept = await durable.aget_tuple(asked)
    assert kept is not None and kept.pending_writes == [("task-ask", "__interrupt__", "approve?")]


async def test_dry_run_lists_what_would_go_and_changes_nothing(
    durable: PostgresDurableSaver, pg_dsn: str
):
    long = await put_with_writes(durable, "long", 4)
    old = await put_with_writes(durable, "old", 2)
    await backdate(pg_dsn, "old", 40 * DAY)
    policy = Retention(idle=30 * DAY, idle_action="delete", keep_last=2)
    report = await durable.aretain(policy, dry_run=True)
    found = {o.thread_id: o for o in report.outcomes}
    assert (found["old"].action, found["old"].checkpoints, found["old"].done) == (
        "delete",
        2,
        False,
    )
    assert found["long"].removed == {"": tuple(long[:2])} and not found["long"].done
    assert report.transactions == [] and report.removed_checkpoints == 0
    assert await durable_ids(pg_dsn, "long") == long
    assert await durable_ids(pg_dsn, "old") == old


async def test_each_transaction_removes_at_most_rows_per_transaction(
    durable: PostgresDurableSaver, pg_dsn: str
):
    ids = await put_with_writes(durable, "long", 11)
    for n in range(4):
        await put_chain(durable, f"other-{n}", 1)
    policy = Retention(keep_last=1, rows_per_transaction=3, threads_per_batch=2)
    report = await durable.aretain(policy)
    assert report.transactions == [3, 3, 3, 1]
    assert report.batches == [2, 2, 1]  # five threads, two per batch
    assert await durable_ids(pg_dsn, "long") == ids[-1:]


async def test_workers_share_one_sweep_a_batch_at_a_time_then_wait_the_interval(
    durable: PostgresDurableSaver,
):
    for n in range(5):
        await put_chain(durable, f"t{n}", 3)
    policy = Retention(keep_last=1, threads_per_batch=2, interval=timedelta(hours=1))
    first, second = Sweeper(durable, policy), Sweeper(durable, policy)
    seen = []
    for worker in (first, second, first):  # the position is shared: they take turns
        report = await worker.step()
        assert report is not None
        seen.append([o.thread_id for o in report.outcomes])
    assert seen == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    assert first.sweeps == 1
    assert await second.step() is None  # the sweep ended: the next one is an hour away
    assert await Sweeper(durable, policy).step() is None


async def test_a_late_write_to_a_removed_checkpoint_is_dropped_then_forgotten(
    durable: PostgresDurableSaver, pg_dsn: str
):
    saved = await put_chain(durable, "t", 3)
    await durable.aretain(Retention(keep_last=1))
    removed = saved[0]
    late = writes_record(durable.serde, durable.limits, removed, [("x", "late")], "task-late")
    assert await durable.awrite_guarded([late], [clock_position()]) == []  # not a tombstone
    writes = await rows(pg_dsn, "dualsaver_writes", "t")
    assert [w["checkpoint_id"] for w in writes] == []  # dropped on arrival
    remembered = await rows(pg_dsn, "dualsaver_deleted_checkpoints", "t")
    assert len(remembered) == 2
    two_days_ago = "UPDATE dualsaver_deleted_checkpoints SET deleted_at = now() - interval '2 days'"
    await fetch(pg_dsn, two_days_ago)
    await put_chain(durable, "t", 1, start=saved[-1])
    await durable.aretain(Retention(keep_last=1))  # removes one more, forgets the old two
    remembered = await rows(pg_dsn, "dualsaver_deleted_checkpoints", "t")
    assert [r["checkpoint_id"] for r in remembered] == [saved[-1]["configurable"]["checkpoint_id"]]


# -- the chain, both modes -----------------------------------------------------------------


async def test_chain_keep_last_removes_the_same_checkpoints_from_redis(
    chain: DualSaver, pg_dsn: str
):
    ids = await put_with_writes(chain, "t", 5)
    await chain.aretain(Retention(keep_last=2))
    assert await durable_ids(pg_dsn, "t") == ids[-2:]
    assert await hot_ids(chain, "t") == ids[-2:]
    listed = [t.config["configurable"]["checkpoint_id"] async for t in chain.alist(config("t"))]
    assert listed == list(reversed(ids[-2:]))
    latest = await chain.aget_tuple(config("t"))
    assert latest is not None and latest.pending_writes == [("task-4", "x", "w4")]


async def test_chain_delete_of_an_idle_thread_is_a_tombstone_nothing_resurrects(
    chain: DualSaver, pg_dsn: str
):
    await put_with_writes(chain, "idle", 3)
    await chain.aflush()
    await backdate(pg_dsn, "idle", 40 * DAY)
    await backdate_hot(chain, "idle", 40 * DAY)
    queued_before = clock_position()  # a record queued before the delete, flushed late
    late = checkpoint_record(
        chain.serde, chain.limits, config("idle"),
        (await chain.aget_tuple(config("idle"))).checkpoint,  # type: ignore[union-attr]
        {"step": 9}, {},
    )  # fmt: skip
    report = await chain.aretain(Retention(idle=30 * DAY, idle_action="delete"))
    assert [(o.thread_id, o.action, o.done) for o in report.outcomes] == [("idle", "delete", True)]
    assert await durable_ids(pg_dsn, "idle") == []
    assert (await chain.hot.athread_info("idle"))["checkpoints"] == 0
    assert await chain.aget_tuple(config("idle")) is None
    assert await chain.durable.awrite_guarded([late], [queued_before]) == [0]  # refused
    assert await durable_ids(pg_dsn, "idle") == []
    again = await put_chain(chain, "idle", 1)  # used again after the delete: kept
    await chain.aflush()
    assert await durable_ids(pg_dsn, "idle") == ids_of(again)


async def test_chain_leaves_an_idle_thread_redis_saw_written_recently(
    chain: DualSaver, pg_dsn: str
):
    ids = await put_with_writes(chain, "busy", 3)
    await chain.aflush()
    await backdate(pg_dsn, "busy", 40 * DAY)  # PostgreSQL says idle; Redis says not
    report = await chain.aretain(Retention(idle=30 * DAY, idle_action="delete"))
    [outcome] = report.outcomes
    assert (outcome.action, outcome.done) == ("prune", True)
    assert "in use again" in outcome.reason
    assert await durable_ids(pg_dsn, "busy") == ids[-1:]  # pruned to its latest, not deleted
    assert await hot_ids(chain, "busy") == ids[-1:]
    assert await chain.aget_tuple(config("busy")) is not None


async def test_retention_is_never_on_the_put_path_or_a_flush(
    redis_url: str, pg_dsn: str, redis_prefix: str
):
    policy = Retention(keep_last=1, interval=timedelta(milliseconds=10))
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False, retention=policy
    ) as saver:
        await saver.asetup()
        ids = await put_with_writes(saver, "t", 4)
        await saver.aflush()
        assert await durable_ids(pg_dsn, "t") == ids  # puts and flushes removed nothing


@pytest.mark.parametrize("mode", MODES)
async def test_the_flusher_enforces_retention_without_a_call(
    mode: str, redis_url: str, pg_dsn: str, redis_prefix: str
):
    policy = Retention(keep_last=2, interval=timedelta(milliseconds=50))
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, mode=mode, retention=policy
    ) as saver:
        await saver.asetup()
        ids = await put_with_writes(saver, "t", 6)

        async def pruned() -> bool:
            return (
                await durable_ids(pg_dsn, "t") == ids[-2:]
                and await hot_ids(saver, "t") == (ids[-2:])
            )

        await eventually(pruned, what="the background flusher pruning to the newest two")
        assert (await saver.aget_tuple(config("t"))) is not None


async def test_retention_on_redis_cluster_deletes_and_prunes_on_every_master(pg_dsn: str):
    """The hot tier's scripts run where each thread's slot lives (three masters)."""
    with valkey_cluster(masters=3) as nodes:
        url = nodes[0].url.replace("redis://", "redis+cluster://", 1)
        async with DualSaver.from_conn_string(url, pg_dsn, background_flush=False) as saver:
            await saver.asetup()
            threads = [f"c{n}" for n in range(9)]
            client = await saver.hot.aclient()
            masters = {
                client.get_node_from_key(saver.hot.thread_keys(t).meta).port for t in threads
            }
            assert len(masters) == 3  # the threads' slots are on every master
            saved = {t: await put_with_writes(saver, t, 3) for t in threads}
            await saver.aflush()
            idle = threads[::2]
            for thread in idle:
                await backdate(pg_dsn, thread, 40 * DAY)
                await backdate_hot(saver, thread, 40 * DAY)
            policy = Retention(idle=30 * DAY, idle_action="delete", keep_last=1)
            report = await saver.aretain(policy)
            assert sorted(o.thread_id for o in report.outcomes if o.action == "delete") == idle
            for thread in threads:
                expected = [] if thread in idle else saved[thread][-1:]
                assert await durable_ids(pg_dsn, thread) == expected
                assert await hot_ids(saver, thread) == expected


class Ask(TypedDict):
    n: int
    answer: str


def ask_graph(saver: Any) -> Any:
    """Counts, then waits at an interrupt for an answer."""
    builder = StateGraph(Ask)
    builder.add_node("count", lambda s: {"n": s["n"] + 1})
    builder.add_node("ask", lambda s: {"answer": interrupt("approve?")})
    builder.add_edge(START, "count")
    builder.add_edge("count", "ask")
    builder.add_edge("ask", END)
    return builder.compile(checkpointer=saver)


async def test_a_waiting_thread_is_pruned_not_deleted_and_still_resumes(
    chain: DualSaver, pg_dsn: str
):
    thread = f"wait-{uuid.uuid4()}"
    graph = ask_graph(chain)
    await graph.ainvoke({"n": 0, "answer": ""}, config(thread))
    assert (await graph.aget_state(config(thread))).next == ("ask",)
    await chain.aflush()
    await backdate(pg_dsn, thread, 40 * DAY)
    await backdate_hot(chain, thread, 40 * DAY)
    report = await chain.aretain(Retention(idle=30 * DAY, idle_action="delete"))
    [outcome] = report.outcomes
    assert (outcome.action, outcome.waiting) == ("prune", True)
    assert len(await durable_ids(pg_dsn, thread)) == 1
    done = await graph.ainvoke(Command(resume="yes"), config(thread))
    assert done == {"n": 1, "answer": "yes"}


async def test_delete_waiting_deletes_a_waiting_thread(chain: DualSaver, pg_dsn: str):
    thread = f"wait-{uuid.uuid4()}"
    await ask_graph(chain).ainvoke({"n": 0, "answer": ""}, config(thread))
    await chain.aflush()
    await backdate(pg_dsn, thread, 40 * DAY)
    await backdate_hot(chain, thread, 40 * DAY)
    policy = Retention(idle=30 * DAY, idle_action="delete", delete_waiting=True)
    await chain.aretain(policy)
    assert await durable_ids(pg_dsn, thread) == []
    assert await chain.aget_tuple(config(thread)) is None


async def test_chain_keeps_delta_channel_ancestors_and_the_graph_goes_on(
    chain: DualSaver, pg_dsn: str
):
    graph = await delta_thread(chain, "delta")
    before = await graph.aget_state(config("delta"))
    await chain.aretain(Retention(keep_last=1))
    assert await hot_ids(chain, "delta") == await durable_ids(pg_dsn, "delta")
    after = await graph.aget_state(config("delta"))
    assert after.values == before.values


# -- the CLI ------------------------------------------------------------------------------


@pytest.fixture
def store(redis_url: str, pg_dsn: str, redis_prefix: str) -> Store:
    return Store(redis_url, pg_dsn, redis_prefix)


def checkpoints_of(store: Store, thread_id: str) -> list[str]:
    return asyncio.run(durable_ids(store.postgres_url, thread_id))


def put_in(store: Store, thread_id: str, count: int) -> list[str]:
    async def go() -> list[str]:
        async with store.saver(background_flush=False) as saver:
            await saver.asetup()
            saved = await put_with_writes(saver, thread_id, count)
            await saver.aflush()
            return saved

    return asyncio.run(go())


def test_cli_prune_dry_run_then_the_real_run(store: Store):
    ids = put_in(store, "t", 5)
    report = data(invoke(store, "prune", "--keep-last", "2", "--dry-run", "--json"))
    assert report["dry_run"] is True
    [row] = report["threads"]
    assert (row["thread_id"], row["action"], row["checkpoints"]) == ("t", "prune", 3)
    assert row["removed"] == {"": ids[:3]}
    assert checkpoints_of(store, "t") == ids
    text = invoke(store, "prune", "--keep-last", "2", "--dry-run")
    assert "would remove 3 checkpoints of thread 't'" in text.stdout
    assert "nothing was changed" in text.stdout

    refused = invoke(store, "prune", "--keep-last", "2", input="n\n")
    assert refused.exit_code == 1 and checkpoints_of(store, "t") == ids
    done = invoke(store, "prune", "--keep-last", "2", "--yes")
    assert done.exit_code == 0, done.output
    assert "removed 3 checkpoints of thread 't'" in done.stdout
    assert checkpoints_of(store, "t") == ids[-2:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "--idle", "30x", "--yes"], "not a duration: '30x'"),
        (["prune", "--keep-last", "0", "--yes"], "Input should be greater than or equal to 1"),
        (["prune", "--idle", "1d", "--idle-action", "purge", "--yes"], "idle_action must be"),
        (["prune", "t", "--keep-last", "1", "--yes"], "give no thread ids with it"),
        (["prune", "--dry-run"], "at least one of idle=, keep_last= or max_age="),
        (["prune"], "give thread ids with --keep-latest or --delete, or a retention policy"),
    ],
)
def test_cli_bad_retention_input_is_a_usage_error_and_removes_nothing(
    store: Store, args: list[str], message: str
):
    ids = put_in(store, "t", 3)
    result = invoke(store, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.replace("│", " ").split())
    assert checkpoints_of(store, "t") == ids


@pytest.fixture
def retaining_worker(store: Store) -> Iterator[subprocess.Popen[str]]:
    """``dualsaver flush --follow --keep-last 2`` as its own process, killed by PID if
    still running (also when the test fails)."""
    args = ["flush", "--follow", "--keep-last", "2", "--retention-every", "1s"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "langgraph_dualsaver", *args],
        env={**os.environ, **store.env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_a_flush_worker_with_a_policy_enforces_it(
    store: Store, retaining_worker: subprocess.Popen[str]
):
    assert retaining_worker.stdout is not None and retaining_worker.stderr is not None
    banner = retaining_worker.stdout.readline()  # printed once the worker is ready
    assert "flushing the outbox of prefix" in banner, retaining_worker.stderr.read()
    assert "retention: keep last 2" in banner
    ids = put_in(store, "t", 5)

    def pruned() -> bool:
        assert retaining_worker.poll() is None, retaining_worker.stderr.read()  # type: ignore[union-attr]
        return checkpoints_of(store, "t") == ids[-2:]

    wait_until(pruned, "the worker pruning to the newest two", timeout=30)
