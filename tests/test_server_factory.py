"""``langgraph_dualsaver.server.checkpointer``, the factory ``langgraph.json`` names, on
its own: an async context manager configured from the environment, with every
capability the Agent Server checks, that closes what it opened and runs a real graph."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aredis
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command

from langgraph_dualsaver import DualSaver
from langgraph_dualsaver.app import LARGE_DUPLICATE_CUSTOMER, build_graph, new_case, thread_config
from langgraph_dualsaver.embedded import EmbeddedValkey
from langgraph_dualsaver.server import checkpointer
from tests.servers import remove_tree, throwaway_dir, valkey_server

APPROVE = {"approved": True, "reviewer": "ana@support", "note": "confirmed with the bank"}
URL_VARS = ("DUALSAVER_REDIS_URL", "DUALSAVER_POSTGRES_URL")


PointEnv = Callable[..., None]


@pytest.fixture
def env_for(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, pg_dsn: str, redis_prefix: str
) -> PointEnv:
    """Point the DUALSAVER_* variables at the test servers (extra ones as given)."""

    def point(redis: str = redis_url, **extra: str) -> None:
        monkeypatch.setenv("DUALSAVER_REDIS_URL", redis)
        monkeypatch.setenv("DUALSAVER_POSTGRES_URL", pg_dsn)
        monkeypatch.setenv("DUALSAVER_PREFIX", redis_prefix)
        for name in ("DUALSAVER_MODE", "DUALSAVER_SCHEMA", "DUALSAVER_OUTBOX_KEY"):
            monkeypatch.delenv(name, raising=False)
        for name, value in extra.items():
            monkeypatch.setenv(name, value)

    return point


async def test_factory_yields_a_set_up_dualsaver_configured_from_the_environment(
    env_for: PointEnv, redis_prefix: str
) -> None:
    env_for(DUALSAVER_MODE="write_through", DUALSAVER_SCHEMA="support")
    async with checkpointer() as saver:
        assert isinstance(saver, DualSaver)
        assert isinstance(saver, BaseCheckpointSaver)
        assert saver.mode == "write_through"
        assert saver.hot.prefix == redis_prefix
        assert saver.durable.schema == "support"
        assert await saver.aget_tuple(thread_config("never-written")) is None


REQUIRED = ("aget_tuple", "alist", "aput", "aput_writes")
"""What the Agent Server refuses a custom checkpointer without (it names ``aget`` too,
which BaseCheckpointSaver implements over ``aget_tuple``)."""
EXTENDED = ("adelete_thread", "adelete_for_runs", "acopy_thread", "aprune")
"""What it warns about (or falls back for) when missing: thread deletion, the rollback
multitask strategy, thread copies, keep_latest pruning."""


def overrides(saver_type: type, method: str) -> bool:
    """The server's test: the class has its own method, not BaseCheckpointSaver's."""
    return getattr(saver_type, method) is not getattr(BaseCheckpointSaver, method)


async def test_factory_saver_has_every_capability_the_agent_server_checks(
    env_for: PointEnv,
) -> None:
    env_for()
    async with checkpointer() as saver:
        missing = [m for m in (*REQUIRED, *EXTENDED) if not overrides(type(saver), m)]
    assert missing == []


async def test_factory_runs_the_case_to_review_and_resumes_it(env_for: PointEnv) -> None:
    env_for()
    config = thread_config("case_8842-factory")
    async with checkpointer() as saver:
        graph = build_graph(saver)
        await graph.ainvoke(new_case(LARGE_DUPLICATE_CUSTOMER), config)
        assert (await graph.aget_state(config)).next == ("policy_agent",)
        final = await graph.ainvoke(Command(resume=APPROVE), config)
        assert final["policy"]["approved"] is True
        assert final["current_step"] == "done"
    async with checkpointer() as reopened:
        assert (await build_graph(reopened).aget_state(config)).values["current_step"] == "done"


@pytest.fixture
def own_valkey() -> Iterator[EmbeddedValkey]:
    """A Valkey for one test, so its client count is the factory's alone."""
    with valkey_server() as server:
        yield server


async def clients_of(url: str) -> int:
    probe = aredis.Redis.from_url(url)
    try:
        return len(await probe.client_list()) - 1
    finally:
        await probe.aclose()


async def sessions_of(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'langgraph-dualsaver'"
        )
    finally:
        await conn.close()


async def test_factory_closes_every_connection_it_opened(
    env_for: PointEnv, own_valkey: EmbeddedValkey, pg_dsn: str
) -> None:
    env_for(redis=own_valkey.url)
    async with checkpointer() as saver:
        assert await saver.aget_tuple(thread_config("never-written")) is None
        assert await clients_of(own_valkey.url) > 0
        assert await sessions_of(pg_dsn) > 0
    assert await clients_of(own_valkey.url) == 0
    assert await sessions_of(pg_dsn) == 0


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A DUALSAVER_HOME of its own and no URLs; whatever servers.json names is killed by
    PID afterwards, even when the test fails."""
    path = throwaway_dir("dualsaver-factory-")  # traversable by the postgres system user
    for name in (*URL_VARS, "DUALSAVER_MODE", "DUALSAVER_SCHEMA", "DUALSAVER_OUTBOX_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DUALSAVER_HOME", str(path))
    try:
        yield path
    finally:
        for pid in server_pids(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        remove_tree(path)


def server_pids(home: Path) -> list[int]:
    state = home / "servers.json"
    if not state.exists():
        return []
    return [entry["pid"] for entry in json.loads(state.read_text()).values()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_factory_without_urls_starts_embedded_servers_and_stops_them_on_exit(
    home: Path,
) -> None:
    async with checkpointer() as saver:
        pids = server_pids(home)
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        graph = build_graph(saver)
        config = thread_config("case_8842-embedded")
        await graph.ainvoke(new_case(LARGE_DUPLICATE_CUSTOMER), config)
        assert (await graph.aget_state(config)).next == ("policy_agent",)
    assert not any(alive(pid) for pid in pids)
