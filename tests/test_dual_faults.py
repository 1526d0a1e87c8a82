"""Faults injected for real: processes killed, paused and restarted, by PID.

Each test starts its own Valkey and PostgreSQL, so it can break them; the fixtures stop
them even when the test fails.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import operator
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from langgraph_dualsaver.chain.flusher import Flusher, FlushSettings
from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.embedded import EmbeddedPostgres, EmbeddedValkey
from langgraph_dualsaver.errors import DurableWriteError
from langgraph_dualsaver.hot.saver import RedisHotSaver
from tests.helpers import config, durable_ids, ids_of, put_chain
from tests.servers import postgres_server, valkey_server

SCRIPTS = Path(__file__).parent / "scripts"
FAST_CLAIM = FlushSettings(claim_idle=timedelta(milliseconds=200))


@pytest.fixture
def valkey() -> Iterator[EmbeddedValkey]:
    with valkey_server(appendonly=False) as server:
        yield server


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    with postgres_server() as server:
        yield server


class Steps(TypedDict):
    done: Annotated[list[int], operator.add]


def counting_graph(steps: int, at_step: dict[int, Callable[[], None]]):
    """``steps`` nodes in a row; before node ``k`` runs, ``at_step[k]()`` is called."""
    builder = StateGraph(Steps)
    names = [f"n{k}" for k in range(steps)]
    for k, name in enumerate(names):

        def node(state: Steps, k: int = k) -> dict:
            if k in at_step:
                at_step[k]()
            return {"done": [k]}

        builder.add_node(name, node)
    builder.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    return builder


def history_ids(graph, cfg) -> list[str]:
    return sorted(s.config["configurable"]["checkpoint_id"] for s in graph.get_state_history(cfg))


def test_valkey_killed_mid_run_loses_nothing_acknowledged_in_write_through(
    valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> None:
    thread = f"kill-valkey-{uuid.uuid4()}"
    cfg = config(thread)
    with DualSaver.from_conn_string(valkey.url, postgres.url, mode="write_through") as saver:
        saver.setup()
        graph = counting_graph(6, {3: valkey.kill}).compile(checkpointer=saver)
        result = graph.invoke({"done": []}, cfg)
        assert result["done"] == [0, 1, 2, 3, 4, 5]  # the run went on, on PostgreSQL alone
        assert saver.stats().degraded_writes > 0
        acknowledged = history_ids(graph, cfg)
    assert sorted(asyncio.run(durable_ids(postgres.url, thread))) == acknowledged

    valkey.start()  # an empty Redis: the thread resumes from PostgreSQL
    with DualSaver.from_conn_string(valkey.url, postgres.url, mode="write_through") as saver:
        saver.setup()
        graph = counting_graph(6, {}).compile(checkpointer=saver)
        assert graph.get_state(cfg).values["done"] == [0, 1, 2, 3, 4, 5]
        again = graph.invoke({"done": []}, cfg)
        assert again["done"] == [0, 1, 2, 3, 4, 5] * 2


def test_postgres_restarted_mid_run_in_write_behind_drains_everything(
    valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> None:
    thread = f"restart-pg-{uuid.uuid4()}"
    cfg = config(thread)
    with DualSaver.from_conn_string(valkey.url, postgres.url, mode="write_behind") as saver:
        saver.setup()
        graph = counting_graph(8, {2: postgres.stop}).compile(checkpointer=saver)
        assert graph.invoke({"done": []}, cfg)["done"] == list(range(8))
        assert saver.lag() > 0  # PostgreSQL is down: the outbox holds the rest
        postgres.start()
        saver.flush()
        assert saver.lag() == 0
        assert sorted(asyncio.run(durable_ids(postgres.url, thread))) == history_ids(graph, cfg)


async def test_postgres_unreachable_in_write_through_raises_and_keeps_the_entry(
    valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> None:
    thread = f"wt-down-{uuid.uuid4()}"
    async with DualSaver.from_conn_string(
        valkey.url, postgres.url, mode="write_through", background_flush=False
    ) as saver:
        await saver.asetup()
        [first] = await put_chain(saver, thread, 1)
        postgres.stop()
        started = time.monotonic()
        with pytest.raises(DurableWriteError, match="stays queued"):
            await put_chain(saver, thread, 1, start=first)
        assert time.monotonic() - started < 5  # the configured timeout, not a hang
        assert await saver.alag() == 1
        postgres.start()
        await saver.aflush()
        assert len(await durable_ids(postgres.url, thread)) == 2


@pytest.mark.parametrize("kill_point", ["before_commit", "after_commit"])
async def test_a_flusher_killed_mid_batch_is_finished_by_another_exactly_once(
    kill_point: str, valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> None:
    thread = f"flusher-kill-{uuid.uuid4()}"
    async with DualSaver.from_conn_string(
        valkey.url, postgres.url, mode="write_behind", background_flush=False, flush=FAST_CLAIM
    ) as saver:
        await saver.asetup()
        saved = await put_chain(saver, thread, 20)
        worker = subprocess.run(
            [sys.executable, str(SCRIPTS / "dual_flusher_killed.py"), valkey.url, postgres.url,
             kill_point],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert worker.returncode == -signal.SIGKILL, worker.stderr
        committed = await durable_ids(postgres.url, thread)
        assert committed == ([] if kill_point == "before_commit" else ids_of(saved))

        survivor = Flusher(saver.hot, saver.durable, FAST_CLAIM)
        await survivor.drain()
        assert await durable_ids(postgres.url, thread) == ids_of(saved)  # each exactly once
        assert await saver.alag() == 0


async def test_an_application_killed_before_the_flush_loses_nothing(
    valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> None:
    thread = f"app-kill-{uuid.uuid4()}"
    script = str(SCRIPTS / "dual_write_then_wait.py")
    app = subprocess.Popen(
        [sys.executable, script, valkey.url, postgres.url, thread],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        written = json.loads(app.stdout.readline())  # acknowledged by put
        app.kill()
        app.wait(timeout=10)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(timeout=10)
    assert await durable_ids(postgres.url, thread) == []
    async with DualSaver.from_conn_string(valkey.url, postgres.url, flush=FAST_CLAIM) as saver:
        await saver.asetup()
        await saver.aflush()
    assert await durable_ids(postgres.url, thread) == written


async def test_a_paused_redis_fails_fast_and_serves_nothing_stale_after(
    valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> None:
    thread = f"sigstop-{uuid.uuid4()}"
    async with DualSaver.from_conn_string(
        valkey.url, postgres.url, mode="write_through", background_flush=False
    ) as saver:
        await saver.asetup()
        [first] = await put_chain(saver, thread, 1)
        valkey.signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            [second] = await put_chain(saver, thread, 1, start=first)  # degraded: PostgreSQL
            assert time.monotonic() - started < 3.5  # about the command timeout, not 5 s x 10
            latest = await saver.aget_tuple(config(thread))
            assert latest.config == second
        finally:
            valkey.signal(signal.SIGCONT)
        stats = await saver.astats()
        assert stats.degraded_writes == 1
        # Redis still holds `first` as its latest; it must never be served again.
        saver._health.retry_at = 0.0  # skip the circuit breaker's cooldown
        latest = await saver.aget_tuple(config(thread))  # evicts the stale copy first
        assert latest.config == second
        assert (await saver.hot.aget_tuple(config(thread))).config == second  # backfilled


async def test_redis_back_from_an_old_snapshot_serves_no_stale_latest(
    postgres: EmbeddedPostgres,
) -> None:
    thread = f"snapshot-{uuid.uuid4()}"
    with valkey_server() as valkey:
        async with DualSaver.from_conn_string(
            valkey.url, postgres.url, mode="write_through", background_flush=False
        ) as saver:
            await saver.asetup()
            [first] = await put_chain(saver, thread, 1)
            client = await saver.hot.aclient()
            await client.save()  # the snapshot Redis will come back from
            [second] = await put_chain(saver, thread, 1, start=first)
            valkey.kill()
            valkey.start()  # same port and directory: loads the old snapshot
            async with RedisHotSaver.from_conn_string(
                valkey.url, outbox=True, ttl=None
            ) as raw:  # a plain look at Redis: its latest is the stale one
                assert (await raw.aget_tuple(config(thread))).config == first
            latest = await saver.aget_tuple(config(thread))
            assert latest.config == second
