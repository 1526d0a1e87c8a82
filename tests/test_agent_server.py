"""DualSaver under LangGraph's Agent Server, end to end: ``langgraph dev`` serves the
example project (``examples/agent_server``), whose ``langgraph.json`` names
``langgraph_dualsaver.server.checkpointer``; the SDK drives it; Valkey and PostgreSQL
are read directly to see what the server left there."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aredis
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError

from langgraph_dualsaver.app import AUTO_REFUND_LIMIT, LARGE_DUPLICATE_CUSTOMER, SEED_CUSTOMER
from langgraph_dualsaver.app.services import REQUEST_TEXT
from langgraph_dualsaver.embedded import EmbeddedValkey
from tests.agent_server import (
    AgentServer,
    Stored,
    agent_server,
    eventually,
    served_project,
    server_env,
    stores_agree,
)
from tests.held_graph import entered_file, open_file
from tests.servers import fresh_database, fresh_prefix, valkey_server

APPROVE = {"approved": True, "reviewer": "ana@support", "note": "confirmed with the bank"}
MISSING = "Custom checkpointer missing"


@pytest.fixture(scope="module")
def stores(redis_url: str, postgres_url: str) -> Iterator[tuple[str, str, str]]:
    """``(redis_url, prefix, dsn)``: a prefix and a database for this module's server."""
    with fresh_prefix(redis_url) as prefix, fresh_database(postgres_url) as dsn:
        yield redis_url, prefix, dsn


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the held graph's gates live (``tests/held_graph.py``)."""
    return tmp_path_factory.mktemp("gates")


@pytest.fixture(scope="module")
def server(
    stores: tuple[str, str, str], gates: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentServer]:
    """``langgraph dev`` on the example project, for the whole module."""
    redis_url, prefix, dsn = stores
    project = served_project(tmp_path_factory.mktemp("served") / "project")
    with agent_server(project, server_env(redis_url, dsn, prefix, gates)) as running:
        yield running


@pytest.fixture
async def client(server: AgentServer) -> AsyncIterator[LangGraphClient]:
    async with get_client(url=server.url, api_key=None) as opened:
        yield opened


def case_input(customer_id: str) -> dict[str, Any]:
    """A new case as JSON: what ``new_case`` builds, over HTTP."""
    return {
        "customer_id": customer_id,
        "request_text": REQUEST_TEXT,
        "messages": [{"role": "user", "content": REQUEST_TEXT}],
        "completed_steps": [],
    }


async def agreed(
    stores: tuple[str, str, str], thread_id: str, done: Callable[[Stored], bool]
) -> Stored:
    """Valkey's view of the thread, once the outbox is drained, PostgreSQL holds the same
    checkpoints and ``done`` holds."""
    return (await both_agree(stores, thread_id, done))[0]


async def both_agree(
    stores: tuple[str, str, str], thread_id: str, done: Callable[[Stored], bool]
) -> tuple[Stored, Stored]:
    """``(Valkey's view, PostgreSQL's view)``, as ``agreed`` waits for them."""
    redis_url, prefix, dsn = stores
    return await stores_agree(redis_url, prefix, dsn, thread_id, done)


async def history(client: LangGraphClient, thread_id: str) -> list[dict[str, Any]]:
    """The thread's states, newest first."""
    return list(await client.threads.get_history(thread_id, limit=1000))


def run_of(state: dict[str, Any]) -> str | None:
    return state["metadata"].get("run_id")


def checkpoint_id(state: dict[str, Any] | None) -> str | None:
    return state["checkpoint_id"] if state else None


def by_run(states: list[dict[str, Any]]) -> dict[str, str | None]:
    return {s["checkpoint"]["checkpoint_id"]: run_of(s) for s in states}


# -- the server takes DualSaver whole -------------------------------------------------


def test_server_uses_dualsaver_and_reports_no_capability_missing(server: AgentServer) -> None:
    messages = server.messages()
    assert any(m.startswith("Using custom checkpointer: DualSaver") for m in messages), (
        server.log_tail()
    )
    assert any(m.startswith("DualSaver checkpointer open: mode=write_behind") for m in messages)
    assert not [m for m in messages if MISSING in m]
    assert not [m for m in messages if "does not implement the expected checkpointer" in m]


# -- a case through the API ------------------------------------------------------------


async def test_case_pauses_for_review_resumes_and_its_history_is_in_both_stores(
    client: LangGraphClient, stores: tuple[str, str, str]
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "case_8842", input=case_input(LARGE_DUPLICATE_CUSTOMER))
    waiting = await client.threads.get_state(thread_id)
    assert waiting["next"] == ["policy_agent"]
    question = waiting["tasks"][0]["interrupts"][0]["value"]
    assert question["customer_id"] == LARGE_DUPLICATE_CUSTOMER
    assert question["refund_amount"] > AUTO_REFUND_LIMIT
    paused = by_run(await history(client, thread_id))
    await agreed(stores, thread_id, lambda s: s.checkpoints == paused)

    final = await client.runs.wait(thread_id, "case_8842", command={"resume": APPROVE})
    assert final["policy"]["approved"] is True
    assert final["policy"]["requires_human_review"] is True
    assert final["current_step"] == "done"
    assert (await client.threads.get_state(thread_id))["next"] == []

    states = await history(client, thread_id)
    assert [s["next"] for s in states][:2] == [[], ["response_agent"]]
    everything = by_run(states)
    assert len(set(everything.values())) == 2, "the first run and the resume"
    assert set(paused) < set(everything)
    valkey = await agreed(stores, thread_id, lambda s: s.checkpoints == everything)
    assert valkey.written, "pending writes are stored too"


async def test_thread_copy_through_the_api_copies_its_checkpoints_in_both_stores(
    client: LangGraphClient, stores: tuple[str, str, str]
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "case_8842", input=case_input(LARGE_DUPLICATE_CUSTOMER))
    source = await agreed(stores, thread_id, lambda s: len(s.checkpoints) >= 3)

    copy_id = (await client.threads.copy(thread_id))["thread_id"]
    copied = await both_agree(stores, copy_id, lambda s: s.checkpoints == source.checkpoints)
    assert copied[0].written == copied[1].written == source.written
    assert (await client.threads.get_state(copy_id))["next"] == ["policy_agent"]
    final = await client.runs.wait(copy_id, "case_8842", command={"resume": APPROVE})
    assert final["current_step"] == "done"


async def test_deleting_a_thread_through_the_api_empties_both_stores(
    client: LangGraphClient, stores: tuple[str, str, str]
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "case_8842", input=case_input(SEED_CUSTOMER))
    await agreed(stores, thread_id, lambda s: len(s.checkpoints) >= 4)

    await client.threads.delete(thread_id)
    valkey, postgres = await both_agree(stores, thread_id, lambda s: not s.checkpoints)
    assert not valkey.written
    assert not postgres.written


# -- a second run while the first is in flight -------------------------------------------


@asynccontextmanager
async def held_run(
    client: LangGraphClient, stores: tuple[str, str, str], gates: Path
) -> AsyncIterator[tuple[str, str, set[str]]]:
    """A run of the held graph stopped in ``billing_agent``, its checkpoints in both
    stores: ``(thread_id, run_id, checkpoint ids)``. The gate opens on exit."""
    thread_id = (await client.threads.create())["thread_id"]
    try:
        run = await client.runs.create(thread_id, "held", input=case_input(SEED_CUSTOMER))
        await eventually(
            lambda: _entries(gates, thread_id), lambda n: n >= 1, "the run to reach the gate"
        )
        run_id = run["run_id"]
        held = await agreed(stores, thread_id, lambda s: len(s.of_run(run_id)) >= 2)
        assert held.written & held.of_run(run_id), "account_agent's writes are stored"
        assert (await client.runs.get(thread_id, run_id))["status"] == "running"
        yield thread_id, run_id, held.of_run(run_id)
    finally:
        open_gate(gates, thread_id)


async def _entries(gates: Path, thread_id: str) -> int:
    path = entered_file(gates, thread_id)
    return len(path.read_text().splitlines()) if path.exists() else 0


def open_gate(gates: Path, thread_id: str) -> None:
    open_file(gates, thread_id).touch()


async def status(client: LangGraphClient, thread_id: str, run_id: str) -> str:
    try:
        return (await client.runs.get(thread_id, run_id))["status"]
    except NotFoundError:
        return "deleted"


def first_of_run(states: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    return min((s for s in states if run_of(s) == run_id), key=lambda s: s["metadata"]["step"])


def last_of_run(states: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    return max((s for s in states if run_of(s) == run_id), key=lambda s: s["metadata"]["step"])


async def test_reject_refuses_the_second_run_and_the_stores_hold_only_the_first(
    client: LangGraphClient, stores: tuple[str, str, str], gates: Path
) -> None:
    async with held_run(client, stores, gates) as (thread_id, first, _):
        with pytest.raises(ConflictError):
            await client.runs.create(
                thread_id, "held", input=case_input(SEED_CUSTOMER), multitask_strategy="reject"
            )
        open_gate(gates, thread_id)
        await client.runs.join(thread_id, first)

    assert await status(client, thread_id, first) == "success"
    assert [r["run_id"] for r in await client.runs.list(thread_id)] == [first]
    states = await history(client, thread_id)
    assert {run_of(s) for s in states} == {first}
    await agreed(stores, thread_id, lambda s: s.checkpoints == by_run(states))


async def test_interrupt_stops_the_first_run_and_the_second_continues_from_its_checkpoints(
    client: LangGraphClient, stores: tuple[str, str, str], gates: Path
) -> None:
    async with held_run(client, stores, gates) as (thread_id, first, first_ids):
        second = await client.runs.create(
            thread_id, "held", input=case_input(SEED_CUSTOMER), multitask_strategy="interrupt"
        )
        await eventually(
            lambda: status(client, thread_id, first), lambda s: s == "interrupted", "interrupt"
        )
        open_gate(gates, thread_id)
        await client.runs.join(thread_id, second["run_id"])

    assert await status(client, thread_id, second["run_id"]) == "success"
    states = await history(client, thread_id)
    assert first_ids <= {s["checkpoint"]["checkpoint_id"] for s in states}
    assert checkpoint_id(first_of_run(states, second["run_id"])["parent_checkpoint"]) in first_ids
    valkey = await agreed(stores, thread_id, lambda s: s.checkpoints == by_run(states))
    assert valkey.runs() == {first, second["run_id"]}


async def rolled_back(
    client: LangGraphClient, stores: tuple[str, str, str], gates: Path
) -> tuple[str, set[str], Stored, Stored]:
    """A held run rolled back by a second one, which then completes: the first run's id
    and checkpoint ids, then Valkey's and PostgreSQL's views once the outbox is drained."""
    async with held_run(client, stores, gates) as (thread_id, first, first_ids):
        second = await client.runs.create(
            thread_id, "held", input=case_input(SEED_CUSTOMER), multitask_strategy="rollback"
        )
        await eventually(
            lambda: status(client, thread_id, first), lambda s: s == "deleted", "the rollback"
        )
        open_gate(gates, thread_id)
        await client.runs.join(thread_id, second["run_id"])

    assert await status(client, thread_id, second["run_id"]) == "success"
    states = await history(client, thread_id)
    assert {run_of(s) for s in states} == {second["run_id"]}
    assert states[-1]["parent_checkpoint"] is None, "the second run starts a fresh thread"
    valkey, postgres = await both_agree(
        stores, thread_id, lambda s: s.checkpoints == by_run(states)
    )
    return first, first_ids, valkey, postgres


async def test_rollback_leaves_no_checkpoint_of_the_first_run_in_either_store(
    client: LangGraphClient, stores: tuple[str, str, str], gates: Path
) -> None:
    first, first_ids, valkey, postgres = await rolled_back(client, stores, gates)
    for name, tier in (("Valkey", valkey), ("PostgreSQL", postgres)):
        assert first not in tier.runs(), f"{name} keeps checkpoints of the rolled-back run"
        assert not first_ids & set(tier.checkpoints), f"{name} keeps its checkpoints"
    assert not first_ids & valkey.written, "Valkey keeps writes of the rolled-back run"


async def test_rollback_leaves_no_write_of_the_first_run_in_postgresql(
    client: LangGraphClient, stores: tuple[str, str, str], gates: Path
) -> None:
    _, first_ids, _, postgres = await rolled_back(client, stores, gates)
    assert not first_ids & postgres.written, "PostgreSQL keeps writes of the rolled-back run"


async def test_enqueue_runs_the_second_after_the_first_and_both_are_in_both_stores(
    client: LangGraphClient, stores: tuple[str, str, str], gates: Path
) -> None:
    async with held_run(client, stores, gates) as (thread_id, first, _):
        second = await client.runs.create(
            thread_id, "held", input=case_input(SEED_CUSTOMER), multitask_strategy="enqueue"
        )
        assert await status(client, thread_id, second["run_id"]) == "pending"
        open_gate(gates, thread_id)
        await client.runs.join(thread_id, first)
        await client.runs.join(thread_id, second["run_id"])

    assert await status(client, thread_id, first) == "success"
    assert await status(client, thread_id, second["run_id"]) == "success"
    states = await history(client, thread_id)
    after = first_of_run(states, second["run_id"])["parent_checkpoint"]
    assert checkpoint_id(after) == last_of_run(states, first)["checkpoint"]["checkpoint_id"]
    valkey = await agreed(stores, thread_id, lambda s: s.checkpoints == by_run(states))
    assert valkey.runs() == {first, second["run_id"]}


# -- shut-down ---------------------------------------------------------------------------


async def valkey_clients(url: str) -> int:
    """Clients connected to Valkey, this probe excluded."""
    probe = aredis.Redis.from_url(url)
    try:
        return len(await probe.client_list()) - 1
    finally:
        await probe.aclose()


async def postgres_sessions(dsn: str) -> int:
    """The saver's sessions (application_name ``langgraph-dualsaver``) on the database."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'langgraph-dualsaver'"
        )
    finally:
        await conn.close()


@pytest.fixture
def own_valkey() -> Iterator[EmbeddedValkey]:
    """A Valkey for one test, so its client count is the server's alone."""
    with valkey_server() as server:
        yield server


async def test_server_shutdown_closes_the_checkpointer_and_every_connection(
    own_valkey: EmbeddedValkey, pg_dsn: str, tmp_path: Path
) -> None:
    project = served_project(tmp_path / "project")
    env = server_env(own_valkey.url, pg_dsn, "shutdown", tmp_path)
    with agent_server(project, env) as running:
        assert await valkey_clients(own_valkey.url) > 0
        assert await postgres_sessions(pg_dsn) > 0
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert running.stop() == -signal.SIGTERM, running.log_tail()
    messages = running.messages()
    assert any(m.startswith("DualSaver checkpointer closed: mode=write_behind") for m in messages)
    assert await valkey_clients(own_valkey.url) == 0
    assert await postgres_sessions(pg_dsn) == 0
