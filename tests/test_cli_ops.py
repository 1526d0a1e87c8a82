"""``dualsaver`` commands that run things: setup, status, flush, prune, delete.

Each test has an empty database and key prefix of its own (they write). ``flush
--follow`` and ``status`` run as real ``python -m langgraph_dualsaver`` subprocesses;
the follow worker is stopped by PID, also when the test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import asyncpg
import pytest

from langgraph_dualsaver._loops import run_sync
from langgraph_dualsaver.app import SEED_CUSTOMER, build_graph, new_case, new_thread_id
from langgraph_dualsaver.app import thread_config as config
from tests.servers import valkey_server
from tests.test_cli import REPO, Store, closed_port, data, invoke, run_cli


@pytest.fixture
def store(redis_url: str, pg_dsn: str, redis_prefix: str) -> Store:
    return Store(redis_url, pg_dsn, redis_prefix)


def run_cases(store: Store, *thread_ids: str, flush: bool = True) -> None:
    """Run the auto-refund case on each thread; with ``flush=False`` the outbox keeps it."""
    with store.saver(background_flush=False) as saver:
        saver.setup()
        graph = build_graph(saver)
        for thread_id in thread_ids:
            graph.invoke(new_case(SEED_CUSTOMER), config(thread_id))
        if flush:
            saver.flush()


def durable_checkpoints(store: Store, thread_id: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(store.postgres_url)
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM dualsaver_checkpoints WHERE thread_id = $1", thread_id
            )
        finally:
            await conn.close()

    return asyncio.run(count())


def presence(store: Store, thread_id: str) -> dict[str, int]:
    with store.saver() as saver:
        hot = run_sync(saver.hot.athread_info(thread_id))["checkpoints"]
    return {"hot": hot, "durable": durable_checkpoints(store, thread_id)}


# -- setup ------------------------------------------------------------------------------


def test_setup_creates_the_schema_and_is_idempotent(store: Store):
    before = data(invoke(store, "status", "--json"))
    assert before["postgres"]["schema_version"] == -1
    assert any("run `dualsaver setup`" in w for w in before["warnings"])
    for _ in range(2):
        result = invoke(store, "setup")
        assert result.exit_code == 0, result.output
        assert "dualsaver schema at version" in result.stdout and "ready" in result.stdout
    after = data(invoke(store, "status", "--json"))
    assert after["postgres"]["schema_version"] == after["postgres"]["schema_latest"] >= 0


def test_setup_refuses_an_eviction_policy_that_can_drop_the_outbox(pg_dsn: str):
    with valkey_server(extra_args=["--maxmemory-policy", "allkeys-lru"]) as server:
        store = Store(server.url, pg_dsn, "p")
        result = invoke(store, "setup")
        assert result.exit_code == 1
        assert "maxmemory-policy allkeys-lru" in result.stderr and "noeviction" in result.stderr
        report = data(invoke(store, "status", "--json"))
        assert report["redis"]["maxmemory_policy"] == "allkeys-lru"
        assert any("set it to noeviction" in w for w in report["warnings"])


# -- status -----------------------------------------------------------------------------


def test_status_reports_the_outbox_the_tiers_and_the_weak_settings(store: Store):
    queued, done = new_thread_id(), new_thread_id()
    run_cases(store, done)
    run_cases(store, queued, flush=False)
    result = run_cli(store, "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["outbox"]["length"] > 0
    assert report["outbox"]["oldest_pending_age_s"] >= 0
    assert report["outbox"]["dead_letters"] == 0
    assert report["threads"] == {"hot": 2, "durable": 1}
    assert report["degraded"] is False
    assert report["redis"]["server"] == "valkey" and report["redis"]["version"].startswith("8.")
    assert report["postgres"]["version"].startswith("18")
    # The test servers trade durability for speed, and status says so.
    assert report["redis"]["appendonly"] == "no" and report["postgres"]["fsync"] == "off"
    assert any("appendonly is off" in w for w in report["warnings"])
    assert any("fsync is off" in w for w in report["warnings"])

    text = invoke(store, "status")
    assert text.exit_code == 0
    for words in ("outbox", "entries not yet in PostgreSQL", "degraded mode", "warning: "):
        assert words in text.stdout


def test_status_with_redis_down_reports_degraded_mode_and_exits_1(store: Store):
    down = Store(f"redis://127.0.0.1:{closed_port()}/0", store.postgres_url, store.prefix)
    result = invoke(down, "status", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["degraded"] is True and report["redis"]["reachable"] is False
    assert report["postgres"]["reachable"] is True
    assert "cannot reach Redis" in result.stderr
    text = invoke(down, "status")
    assert text.exit_code == 1 and "UNREACHABLE" in text.stdout


# -- flush ------------------------------------------------------------------------------


def test_flush_drains_the_outbox_into_postgres(store: Store):
    thread_id = new_thread_id()
    run_cases(store, thread_id, flush=False)
    assert durable_checkpoints(store, thread_id) == 0
    result = invoke(store, "flush", "--json")
    report = data(result)
    assert report["flushed"] > 0 and report["outbox_length"] == 0
    assert durable_checkpoints(store, thread_id) == 6
    again = invoke(store, "flush")
    assert again.exit_code == 0 and again.stdout.startswith("flushed 0 entries; 0 left")


@pytest.fixture
def follow_worker(store: Store) -> Iterator[subprocess.Popen[str]]:
    """``dualsaver flush --follow`` as its own process, killed by PID if still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "langgraph_dualsaver", "flush", "--follow"],
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


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_flush_follow_keeps_flushing_until_a_signal_then_exits_0(
    store: Store, follow_worker: subprocess.Popen[str], stop: signal.Signals
):
    assert follow_worker.stdout is not None
    banner = follow_worker.stdout.readline()  # printed once the worker is ready
    assert "flushing the outbox of prefix" in banner, follow_worker.stderr.read()  # type: ignore[union-attr]
    thread_id = new_thread_id()
    run_cases(store, thread_id, flush=False)
    deadline = time.monotonic() + 30
    while durable_checkpoints(store, thread_id) < 6:
        assert follow_worker.poll() is None, follow_worker.stderr.read()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the worker did not flush within 30 s"
        time.sleep(0.05)
    follow_worker.send_signal(stop)
    assert follow_worker.wait(timeout=30) == 0
    flushed = int(follow_worker.stdout.read().split("flushed ")[1].split()[0])
    assert flushed >= 6  # checkpoints and their writes


# -- prune ------------------------------------------------------------------------------


def test_prune_keep_latest_leaves_one_checkpoint_per_thread(store: Store):
    first, second = new_thread_id(), new_thread_id()
    run_cases(store, first, second)
    result = invoke(store, "prune", first, second, "--keep-latest", "--json")
    report = {row["thread_id"]: row for row in data(result)}
    for thread_id in (first, second):
        assert report[thread_id]["before"]["durable"] == 6
        assert report[thread_id]["after"] == {"hot": 1, "durable": 1}
    history = data(invoke(store, "history", first, "--json"))
    assert len(history) == 1 and history[0]["step"] == 4


def test_prune_delete_asks_first_and_a_no_removes_nothing(store: Store):
    thread_id = new_thread_id()
    run_cases(store, thread_id)
    refused = invoke(store, "prune", thread_id, "--delete", input="n\n")
    assert refused.exit_code == 1
    assert "Remove every checkpoint of 1 thread(s) (6 in Redis, 6 in PostgreSQL)?" in refused.output
    assert presence(store, thread_id) == {"hot": 6, "durable": 6}
    accepted = invoke(store, "prune", thread_id, "--delete", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert presence(store, thread_id) == {"hot": 0, "durable": 0}


def test_prune_with_an_unknown_thread_prunes_nothing(store: Store):
    known = new_thread_id()
    run_cases(store, known)
    result = invoke(store, "prune", known, "case_0000-nope", "--keep-latest")
    assert result.exit_code == 1 and "no thread 'case_0000-nope'" in result.stderr
    assert presence(store, known) == {"hot": 6, "durable": 6}


# -- delete -----------------------------------------------------------------------------


def test_delete_asks_for_confirmation_then_removes_the_thread_from_both_tiers(store: Store):
    doomed, kept = new_thread_id(), new_thread_id()
    run_cases(store, doomed, kept)
    refused = invoke(store, "delete", doomed, input="n\n")
    assert refused.exit_code == 1 and "This cannot be undone" in refused.output
    assert presence(store, doomed) == {"hot": 6, "durable": 6}

    result = invoke(store, "delete", doomed, "--yes")
    assert result.exit_code == 0, result.output
    assert f"deleted thread {doomed!r}" in result.stdout
    assert presence(store, doomed) == {"hot": 0, "durable": 0}
    assert presence(store, kept) == {"hot": 6, "durable": 6}
    gone = invoke(store, "show", doomed)
    assert gone.exit_code == 1 and f"no thread {doomed!r}" in gone.stderr
    again = invoke(store, "delete", doomed, "--yes")
    assert again.exit_code == 1


def test_delete_wins_over_a_queued_flush(store: Store):
    thread_id = new_thread_id()
    run_cases(store, thread_id, flush=False)  # queued, not yet in PostgreSQL
    assert invoke(store, "delete", thread_id, "--yes").exit_code == 0
    assert data(invoke(store, "flush", "--json"))["outbox_length"] == 0
    assert presence(store, thread_id) == {"hot": 0, "durable": 0}
