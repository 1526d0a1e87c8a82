"""An unreachable, stopped or frozen PostgreSQL costs a bounded wait and a clear error,
never a hang; the same saver works again when the server is back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from langgraph_dualsaver.embedded import EmbeddedPostgres, free_port
from langgraph_dualsaver.errors import ConfigurationError, StoreUnavailableError
from langgraph_dualsaver.settings import Timeouts
from tests.servers import postgres_server, with_database

FAST = Timeouts(connect=timedelta(seconds=0.5), command=timedelta(seconds=1))
CONFIG = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}


@pytest.fixture
def server() -> Iterator[EmbeddedPostgres]:
    """A throwaway server this test may stop, restart or freeze (always thawed and
    stopped afterwards)."""
    with postgres_server() as started:
        try:
            yield started
        finally:
            if started.is_running():
                freeze(started, signal.SIGCONT)


def server_pids(server: EmbeddedPostgres) -> list[int]:
    """The postmaster we started and the backends it forked (each backend calls
    setsid(), so they are not in the postmaster's process group)."""
    assert server.pid is not None
    pids = [server.pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == server.pid:
                    pids.append(int(entry.name))
    return pids


def freeze(server: EmbeddedPostgres, sig: int) -> None:
    """SIGSTOP (or SIGCONT) the server and its backends: it accepts TCP connections
    (the kernel does) but answers nothing, as a hung or partitioned server would."""
    for pid in server_pids(server):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def put(saver: PostgresDurableSaver) -> dict[str, Any]:
    cp = generate_checkpoint(channel_values={"x": 1}, channel_versions={"x": 1})
    return await saver.aput(CONFIG, cp, {"source": "loop"}, {"x": 1})


async def unavailable_within(limit_s: float, call: Callable[[], Awaitable[Any]]) -> str:
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as raised:
        await call()
    elapsed = time.monotonic() - started
    assert elapsed < limit_s, f"took {elapsed:.2f}s"
    assert isinstance(raised.value, ConnectionError)
    return str(raised.value)


async def test_a_stopped_server_fails_fast_then_the_saver_recovers(server) -> None:
    async with PostgresDurableSaver.from_conn_string(server.url) as saver:  # default timeouts
        await saver.asetup()
        saved = await put(saver)

        server.stop()
        limit = Timeouts().command_s  # refused connections fail at once; 2 s is the bound
        message = await unavailable_within(limit, lambda: saver.aget_tuple(CONFIG))
        assert f"127.0.0.1:{server.port}" in message and "unavailable" in message
        await unavailable_within(limit, lambda: put(saver))
        await unavailable_within(limit, lambda: saver.aaudit("t"))
        await unavailable_within(limit, lambda: asyncio.to_thread(saver.get_tuple, CONFIG))

        server.start()  # same data directory and port
        latest = await saver.aget_tuple(CONFIG)
        assert latest.config == saved


async def test_a_frozen_server_costs_the_command_timeout_then_the_saver_recovers(server) -> None:
    async with PostgresDurableSaver.from_conn_string(server.url, timeouts=FAST) as saver:
        await saver.asetup()
        saved = await put(saver)

        freeze(server, signal.SIGSTOP)
        try:
            limit = FAST.connect_s + FAST.command_s + 1.0
            message = await unavailable_within(limit, lambda: saver.aget_tuple(CONFIG))
            assert "did not answer within the timeout" in message
            await unavailable_within(limit, lambda: put(saver))
        finally:
            freeze(server, signal.SIGCONT)

        latest = await saver.aget_tuple(CONFIG)
        assert latest.config == saved


async def test_nothing_listening_fails_at_first_use() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    async with PostgresDurableSaver.from_conn_string(url, timeouts=FAST) as saver:
        await unavailable_within(FAST.connect_s + 1.0, saver.asetup)
        await unavailable_within(FAST.connect_s + 1.0, lambda: saver.aget_tuple(CONFIG))


async def test_a_missing_database_is_a_configuration_error(postgres_url: str) -> None:
    url = with_database(postgres_url, "no_such_database")
    async with PostgresDurableSaver.from_conn_string(url, timeouts=FAST) as saver:
        with pytest.raises(ConfigurationError, match="no_such_database"):
            await saver.asetup()


async def test_a_saver_used_before_setup_says_what_to_do(pg_dsn: str) -> None:
    async with PostgresDurableSaver.from_conn_string(pg_dsn) as saver:
        with pytest.raises(ConfigurationError, match=r"call saver.setup\(\)"):
            await saver.aget_tuple(CONFIG)
        await saver.asetup()
        assert await saver.aget_tuple(CONFIG) is None


def test_a_saver_needs_exactly_one_of_pool_or_dsn() -> None:
    with pytest.raises(ConfigurationError, match="exactly one of pool= or dsn="):
        PostgresDurableSaver()
