"""RedisConnection: past ``max_connections`` a call waits for a turn, never fails at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_dualsaver.errors import StoreUnavailableError
from langgraph_dualsaver.hot.connection import RedisConnection
from langgraph_dualsaver.hot.saver import RedisHotSaver
from langgraph_dualsaver.settings import Timeouts
from tests.helpers import config


async def test_many_concurrent_calls_share_a_few_connections(
    redis_url: str, redis_prefix: str
) -> None:
    async with RedisHotSaver.from_conn_string(
        redis_url, prefix=redis_prefix, max_connections=2
    ) as saver:
        threads = [f"t{i}" for i in range(40)]
        await asyncio.gather(
            *(saver.aput(config(t), empty_checkpoint(), {}, {}) for t in threads)
        )
        found = await asyncio.gather(*(saver.aget_tuple(config(t)) for t in threads))
        assert all(tuple_ is not None for tuple_ in found)
        client = await saver.aclient()
        assert len(client.connection_pool._available_connections) <= 2  # the gate held
        assert saver.conn._gate().free == 2  # every turn given back


async def test_a_call_that_finds_every_turn_taken_waits_the_command_timeout_then_fails(
    redis_url: str,
) -> None:
    timeouts = Timeouts(command=timedelta(milliseconds=200))
    conn = RedisConnection(url=redis_url, max_connections=1, timeouts=timeouts)
    try:
        gate = conn._gate()
        assert gate.take_free()  # the only turn, held
        started = asyncio.get_running_loop().time()
        with pytest.raises(StoreUnavailableError, match="all 1 connections stayed busy"):
            await conn.pipeline(lambda pipe: pipe.ping())
        assert asyncio.get_running_loop().time() - started >= 0.2
        gate.give()
        assert await conn.pipeline(lambda pipe: pipe.ping()) == [True]  # free again
    finally:
        await conn.aclose()


async def test_a_caller_cancelled_while_waiting_for_a_turn_loses_no_turn(redis_url: str) -> None:
    conn = RedisConnection(url=redis_url, max_connections=1, timeouts=Timeouts())
    try:
        gate = conn._gate()
        assert gate.take_free()  # the only turn, held
        waiting = asyncio.create_task(conn.pipeline(lambda pipe: pipe.ping()))
        while not gate.waiting:  # the call is queued for a turn
            await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.give()
        assert gate.free == 1 and await conn.pipeline(lambda pipe: pipe.ping()) == [True]
        assert gate.free == 1
    finally:
        await conn.aclose()
