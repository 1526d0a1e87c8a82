"""Every saver kind, opened once for the contract suite, with a look at what it stores.

One saver per kind serves the whole package (tests name their threads and runs
uniquely), so the suite costs a few set-ups, not one per test. Each kind holds a
bystander thread (a checkpoint and a pending write) that no test may touch.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from langgraph_dualsaver.hot import keys as K
from langgraph_dualsaver.hot.saver import RedisHotSaver
from langgraph_dualsaver.records import Limits
from tests.factories import SAVER_KINDS, open_saver
from tests.helpers import checkpoint, config
from tests.refusing_serde import RefusingSerde
from tests.servers import fresh_database, fresh_prefix

LIMITS = Limits(max_id_bytes=800, max_value_bytes=4096)
"""Every kind's limits: the defaults, but values over 4 kB are refused."""

BYSTANDER = "bystander"


@dataclass
class Kind:
    """A saver kind under test, and direct connections to the stores it writes."""

    name: str
    saver: Any
    pg: asyncpg.Connection | None
    redis: aioredis.Redis | None
    prefix: str
    tables: dict[str, bool]
    """The saver's tables, each with whether it has a ``thread_id`` column."""

    @property
    def durable(self) -> PostgresDurableSaver | None:
        if isinstance(self.saver, DualSaver):
            return self.saver.durable
        return self.saver if isinstance(self.saver, PostgresDurableSaver) else None

    @property
    def hot(self) -> RedisHotSaver | None:
        if isinstance(self.saver, DualSaver):
            return self.saver.hot
        return self.saver if isinstance(self.saver, RedisHotSaver) else None

    async def snapshot(self) -> dict[str, Any]:
        """Everything stored: every row of the saver's tables, every key under its
        prefix with its content. The chain's outbox is flushed first."""
        if isinstance(self.saver, DualSaver):
            await self.saver.aflush()
        state: dict[str, Any] = {}
        if self.pg is not None:
            for table in self.tables:
                state[table] = sorted(map(repr, await self.pg.fetch(f"SELECT * FROM {table}")))
        if self.redis is not None:
            keys = sorted([key async for key in self.redis.scan_iter(match=f"{self.prefix}:*")])
            state.update(zip(keys, await self._contents(keys), strict=True))
        return state

    async def thread_snapshot(self, thread_id: str) -> dict[str, Any]:
        """What is stored for one thread: its rows and its own keys (not the shared
        outbox and registry), after a flush."""
        if isinstance(self.saver, DualSaver):
            await self.saver.aflush()
        state: dict[str, Any] = {}
        if self.pg is not None:
            for table, per_thread in self.tables.items():
                if per_thread:
                    rows = await self.pg.fetch(
                        f"SELECT * FROM {table} WHERE thread_id = $1", thread_id
                    )
                    state[table] = sorted(map(repr, rows))
        if self.hot is not None and self.redis is not None:
            keys = self.hot.thread_keys(thread_id).data
            state.update(zip(keys, await self._contents(keys), strict=True))
        return state

    async def blobs(self, thread_id: str) -> list[set[tuple[str, str]]]:
        """The ``(channel, version)`` of every blob stored for the thread, per tier,
        after a flush."""
        if isinstance(self.saver, DualSaver):
            await self.saver.aflush()
        found = []
        if self.pg is not None:
            rows = await self.pg.fetch(
                "SELECT channel, version FROM dualsaver_blobs WHERE thread_id = $1", thread_id
            )
            found.append({(r["channel"], r["version"]) for r in rows})
        if self.hot is not None and self.redis is not None:
            fields = await self.redis.hkeys(self.hot.thread_keys(thread_id).blobs)
            found.append({K.split_blob_field(f)[1:] for f in fields})
        return found

    async def _contents(self, keys: list[Any]) -> list[Any]:
        """Each key's content: DUMP, but a stream as its entries and its groups'
        positions (DUMP would also carry when each consumer last read)."""
        assert self.redis is not None
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
        kinds = await pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        for key, kind in zip(keys, kinds, strict=True):
            if kind == b"stream":
                pipe.xrange(key)
                pipe.xinfo_groups(key)
            else:
                pipe.dump(key)
        replies = iter(await pipe.execute())
        contents = []
        for kind in kinds:
            if kind == b"stream":
                entries, groups = next(replies), next(replies)
                positions = sorted(
                    (g["name"], g["pending"], g["last-delivered-id"]) for g in groups
                )
                contents.append(("stream", entries, positions))
            else:
                contents.append(next(replies))
        return contents


@pytest.fixture(scope="package", params=SAVER_KINDS)
def stores(request: pytest.FixtureRequest, redis_url: str, postgres_url: str) -> Iterator[Any]:
    """The kind's name, a database of its own and a Redis prefix of its own."""
    with fresh_database(postgres_url) as dsn, fresh_prefix(redis_url) as prefix:
        yield request.param, dsn, prefix


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def kind(stores: Any, redis_url: str) -> AsyncIterator[Kind]:
    name, dsn, prefix = stores
    options: dict[str, Any] = {"limits": LIMITS, "serde": RefusingSerde()}
    if name.startswith("dual_"):
        options["background_flush"] = False  # flushes happen when a test (or snapshot) asks
    async with open_saver(name, redis_url=redis_url, pg_dsn=dsn, prefix=prefix, **options) as saver:
        saved = await saver.aput(config(BYSTANDER), checkpoint("kept", 1), {"source": "input"},
                                 {"x": 1})  # fmt: skip
        await saver.aput_writes(saved, [("x", "pending")], "task-1", "~__pregel_pull, n")
        pg = await asyncpg.connect(dsn) if name != "redis" else None
        client = aioredis.Redis.from_url(redis_url) if name != "postgres" else None
        try:
            tables = {}
            if pg is not None:
                rows = await pg.fetch(
                    "SELECT table_name, bool_or(column_name = 'thread_id') AS per_thread "
                    "FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name LIKE 'dualsaver%' GROUP BY table_name ORDER BY table_name"
                )
                tables = {r["table_name"]: r["per_thread"] for r in rows}
            yield Kind(name, saver, pg, client, prefix, tables)
        finally:
            if pg is not None:
                await pg.close()
            if client is not None:
                await client.aclose()


@pytest.fixture
def thread() -> str:
    """A thread id no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"
