"""Copies made by ``with_allowlist`` (LangGraph makes one when it compiles a graph with
strict msgpack, and again for each run): they share the original's Redis connections,
so they must also share what it has checked about the server behind them."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.embedded import EmbeddedPostgres
from langgraph_dualsaver.hot.saver import RedisHotSaver
from tests.helpers import config, put_chain
from tests.servers import postgres_server, valkey_server


@dataclass
class Invoice:
    amount: float


ALLOW = [(__name__, "Invoice")]


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    with postgres_server() as server:
        yield server


@pytest.mark.parametrize("copy_made", ["before the restart", "after the restart"])
async def test_a_copy_reconciles_after_redis_comes_back_from_an_old_snapshot(
    postgres: EmbeddedPostgres, copy_made: str
) -> None:
    thread = f"copy-snapshot-{uuid.uuid4()}"
    with valkey_server() as valkey:
        async with DualSaver.from_conn_string(
            valkey.url, postgres.url, mode="write_through", background_flush=False
        ) as saver:
            await saver.asetup()
            early = saver.with_allowlist(ALLOW)
            assert early is not saver
            [first] = await put_chain(early, thread, 1)
            client = await saver.hot.aclient()
            await client.save()  # the snapshot Redis will come back from
            [second] = await put_chain(saver, thread, 1, start=first)
            valkey.kill()
            valkey.start()  # same port and directory: loads the old snapshot
            async with RedisHotSaver.from_conn_string(valkey.url, outbox=True, ttl=None) as raw:
                assert (await raw.aget_tuple(config(thread))).config == first  # stale
            copy = early if copy_made == "before the restart" else saver.with_allowlist(ALLOW)
            latest = await copy.aget_tuple(config(thread))
            assert latest.config == second
            assert (await saver.aget_tuple(config(thread))).config == second


async def server_checks_during(call: Awaitable[Any], url: str) -> int:
    """How many times the saver asked Redis who it is (``INFO``, as a reconcile does)
    while ``call`` ran: counted by the server itself."""
    client = aioredis.Redis.from_url(url)
    try:
        await client.config_resetstat()
        await call
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_info", {}).get("calls", 0))


async def test_a_copy_does_not_check_a_server_the_original_already_checked(
    postgres: EmbeddedPostgres,
) -> None:
    """The copies share the original's connections, so what was checked about the
    server behind them holds for every copy: a check per new connection, not per
    copy (LangGraph makes a copy at compile time, before any call)."""
    thread = f"copy-checked-{uuid.uuid4()}"
    with valkey_server() as valkey:
        async with DualSaver.from_conn_string(
            valkey.url, postgres.url, mode="write_through", background_flush=False
        ) as saver:
            await saver.asetup()
            compiled = saver.with_allowlist(ALLOW)  # made before any call, as compile does
            assert await server_checks_during(put_chain(saver, thread, 1), valkey.url) > 0
            assert await server_checks_during(compiled.aget_tuple(config(thread)), valkey.url) == 0
            valkey.kill()
            valkey.start()
            assert await server_checks_during(compiled.aget_tuple(config(thread)), valkey.url) > 0
            assert await server_checks_during(saver.aget_tuple(config(thread)), valkey.url) == 0
