"""Fail fast: a stopped or paused Redis costs a configured timeout, then
``StoreUnavailableError``; a restarted one is used again, scripts reloaded."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_dualsaver.embedded import EmbeddedValkey
from langgraph_dualsaver.errors import StoreUnavailableError
from langgraph_dualsaver.hot.saver import RedisHotSaver
from langgraph_dualsaver.settings import Timeouts
from tests.servers import valkey_server

THREAD = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}


@pytest.fixture
def server() -> Iterator[EmbeddedValkey]:
    """A server of this test's own, stopped by PID when the test ends, however it ends."""
    with valkey_server() as started:
        yield started


async def test_a_stopped_server_fails_the_next_call_within_two_seconds(
    server: EmbeddedValkey,
) -> None:
    async with RedisHotSaver.from_conn_string(server.url) as saver:
        await saver.asetup()
        await saver.aput(THREAD, empty_checkpoint(), {}, {})
        server.stop()
        for call in (saver.aget_tuple(THREAD), saver.aput(THREAD, empty_checkpoint(), {}, {})):
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="unavailable"):
                await call
            assert time.monotonic() - started < 2.0


def test_a_stopped_server_fails_sync_calls_too(server: EmbeddedValkey) -> None:
    with RedisHotSaver.from_conn_string(server.url) as saver:
        saver.setup()
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            saver.get_tuple(THREAD)
        assert time.monotonic() - started < 2.0


async def test_a_paused_server_fails_the_next_call_within_two_seconds(
    server: EmbeddedValkey,
) -> None:
    timeouts = Timeouts(connect=timedelta(seconds=1), command=timedelta(seconds=1.5))
    async with RedisHotSaver.from_conn_string(server.url, timeouts=timeouts) as saver:
        await saver.asetup()
        await saver.aput(THREAD, empty_checkpoint(), {}, {})
        server.signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="unavailable"):
                await saver.aget_tuple(THREAD)
            assert time.monotonic() - started < 2.0
        finally:
            server.signal(signal.SIGCONT)
        assert await saver.aget_tuple(THREAD) is not None  # and back once it resumes


async def test_a_restarted_server_is_used_again_and_gets_the_scripts_back(
    server: EmbeddedValkey,
) -> None:
    async with RedisHotSaver.from_conn_string(server.url) as saver:
        await saver.asetup()
        await saver.aput(THREAD, empty_checkpoint(), {}, {})
        server.stop()
        server.start()  # same port, empty (no persistence): no data, no scripts
        assert await saver.aserver_identity() == "new"  # an empty server: distrust
        assert await saver.aget_tuple(THREAD) is None
        await saver.aput(THREAD, empty_checkpoint(), {}, {})
        assert await saver.aget_tuple(THREAD) is not None
        await saver.arecord_server_identity()
        assert await saver.aserver_identity() == "same"
