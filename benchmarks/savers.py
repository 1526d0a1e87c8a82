"""How each saver is opened for a run, and how much it has written.

Every saver gets its own namespace (a fresh PostgreSQL database, a fresh Redis key
prefix, its own SQLite file), so savers never see each other's data. A saver that cannot
be opened (its module does not exist yet, its server lacks a module) raises
``SaverUnavailable`` with the reason, which the run records and reports.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from langgraph.checkpoint.base import BaseCheckpointSaver

from benchmarks.env import Servers, create_database, drop_database

__all__ = [
    "SAVERS",
    "OpenSaver",
    "SaverSpec",
    "SaverUnavailable",
    "open_saver",
]


COUNTERS = ("degraded_reads", "degraded_writes", "hot_misses", "backfills", "dead_letters")


class SaverUnavailable(Exception):
    """A saver cannot be measured in this run; the message says why."""


@dataclass
class OpenSaver:
    """An open, set-up saver and what the harness needs to know about it."""

    spec: SaverSpec
    saver: BaseCheckpointSaver
    pg_dsn: str | None = None
    prefix: str = ""
    servers: Servers | None = None
    sqlite_path: Path | None = None
    _wal_conn: asyncpg.Connection | None = field(default=None, repr=False)
    _redis: aioredis.Redis | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    async def settle(self) -> None:
        """Pay any write debt (the write_behind outbox) before the next measurement."""
        flush = getattr(self.saver, "aflush", None)
        if flush is not None:
            await flush()

    async def counters(self) -> dict[str, int]:
        """The chain's fallback counters (degraded reads and writes, cache misses), so a
        figure that hides a fallback says so; empty for the other savers."""
        stats = getattr(self.saver, "astats", None)
        if stats is None:
            return {}
        current = await stats()
        return {name: getattr(current, name) for name in COUNTERS}

    async def stored_bytes(self, thread_id: str) -> int:
        """A counter of bytes written to the saver's stores so far (see ``bytes_metric``):
        ``thread_id``'s bytes where the store can tell, the server's otherwise."""
        total = 0
        stores = self.spec.stores
        if "memory" in stores:
            total += _memory_bytes(self.saver, thread_id)
        if "sqlite" in stores:
            total += await _sqlite_bytes(self.saver, thread_id)
        if "redis" in stores:
            assert self._redis is not None
            info = await self._redis.info("stats")
            total += int(info["total_net_input_bytes"])
        if "postgres" in stores:
            await self.settle()
            assert self._wal_conn is not None
            total += int(
                await self._wal_conn.fetchval(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')"
                )
            )
        return total


@dataclass(frozen=True)
class SaverSpec:
    """One saver of the comparison."""

    name: str
    label: str
    ours: bool
    stores: tuple[str, ...]
    opener: Callable[[OpenSaver], contextlib.AbstractAsyncContextManager[BaseCheckpointSaver]]

    @property
    def bytes_metric(self) -> str:
        parts = {
            "memory": "serialized bytes held",
            "sqlite": "bytes stored in SQLite",
            "redis": "bytes received by Redis",
            "postgres": "PostgreSQL WAL bytes",
        }
        return " + ".join(parts[s] for s in self.stores)


def _memory_bytes(saver: Any, thread_id: str) -> int:
    total = 0
    for checkpoints in saver.storage.get(thread_id, {}).values():
        for (_, cp), (_, meta), _parent in checkpoints.values():
            total += len(cp) + len(meta)
    for key, (_type, blob) in saver.blobs.items():
        if key[0] == thread_id:
            total += len(blob)
    for key, writes in saver.writes.items():
        if key[0] == thread_id:
            for _task, _channel, (_, value), _path in writes.values():
                total += len(value)
    return total


async def _sqlite_bytes(saver: Any, thread_id: str) -> int:
    async with saver.conn.execute(
        "SELECT (SELECT total(length(checkpoint)) + total(length(metadata)) FROM checkpoints"
        " WHERE thread_id = ?) + (SELECT total(length(value)) FROM writes WHERE thread_id = ?)",
        (thread_id, thread_id),
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0] or 0)


def _import(module: str, name: str) -> Any:
    try:
        mod = __import__(module, fromlist=[name])
        return getattr(mod, name)
    except (ImportError, AttributeError) as exc:
        raise SaverUnavailable(f"{module}.{name} is not importable: {exc}") from exc


# -- openers: each yields an open, set-up saver ---------------------------------------


@contextlib.asynccontextmanager
async def _memory(handle: OpenSaver) -> AsyncIterator[BaseCheckpointSaver]:
    from langgraph.checkpoint.memory import InMemorySaver

    yield InMemorySaver()


@contextlib.asynccontextmanager
async def _sqlite(handle: OpenSaver) -> AsyncIterator[BaseCheckpointSaver]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    assert handle.sqlite_path is not None
    async with AsyncSqliteSaver.from_conn_string(str(handle.sqlite_path)) as saver:
        await saver.setup()
        yield saver


@contextlib.asynccontextmanager
async def _official_postgres(handle: OpenSaver) -> AsyncIterator[BaseCheckpointSaver]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    # The documented production setup: a psycopg pool with these connection kwargs.
    pool = AsyncConnectionPool(
        handle.pg_dsn,
        min_size=4,
        max_size=16,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    await pool.open(wait=True)
    try:
        saver = AsyncPostgresSaver(pool)
        await saver.setup()
        yield saver
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def _official_redis(handle: OpenSaver) -> AsyncIterator[BaseCheckpointSaver]:
    assert handle.servers is not None
    if handle.servers.redis_modules_error:
        raise SaverUnavailable(f"not measured: {handle.servers.redis_modules_error}")
    from langgraph.checkpoint.redis.aio import AsyncRedisSaver

    async with AsyncRedisSaver.from_conn_string(
        handle.servers.redis_url,
        checkpoint_prefix=f"{handle.prefix}_checkpoint",
        checkpoint_write_prefix=f"{handle.prefix}_checkpoint_write",
    ) as saver:
        yield saver


@contextlib.asynccontextmanager
async def _ours_postgres(handle: OpenSaver) -> AsyncIterator[BaseCheckpointSaver]:
    cls = _import("langgraph_dualsaver.durable.saver", "PostgresDurableSaver")
    async with cls.from_conn_string(handle.pg_dsn) as saver:
        await saver.asetup()
        yield saver


@contextlib.asynccontextmanager
async def _ours_redis(handle: OpenSaver) -> AsyncIterator[BaseCheckpointSaver]:
    cls = _import("langgraph_dualsaver.hot.saver", "RedisHotSaver")
    assert handle.servers is not None
    async with cls.from_conn_string(handle.servers.redis_url, prefix=handle.prefix) as saver:
        await saver.asetup()
        yield saver


def _dual(mode: str) -> Callable[[OpenSaver], Any]:
    @contextlib.asynccontextmanager
    async def opener(handle: OpenSaver) -> AsyncIterator[BaseCheckpointSaver]:
        cls = _import("langgraph_dualsaver.chain.saver", "DualSaver")
        assert handle.servers is not None
        async with cls.from_conn_string(
            handle.servers.redis_url, handle.pg_dsn, mode=mode, prefix=handle.prefix
        ) as saver:
            await saver.asetup()
            yield saver

    return opener


@contextlib.asynccontextmanager
async def _dual_with_worker(handle: OpenSaver) -> AsyncIterator[BaseCheckpointSaver]:
    """write_behind as deployed for throughput: the application process only writes to
    Redis, and a ``dualsaver flush --follow`` worker process moves the outbox."""
    cls = _import("langgraph_dualsaver.chain.saver", "DualSaver")
    assert handle.servers is not None
    async with cls.from_conn_string(
        handle.servers.redis_url,
        handle.pg_dsn,
        mode="write_behind",
        prefix=handle.prefix,
        background_flush=False,
    ) as saver:
        await saver.asetup()
        worker = subprocess.Popen(
            [sys.executable, "-m", "langgraph_dualsaver",
             "--redis-url", handle.servers.redis_url, "--postgres-url", handle.pg_dsn,
             "--prefix", handle.prefix, "flush", "--follow"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            yield saver
        finally:
            worker.send_signal(signal.SIGINT)  # finishes its batch, then exits
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)


SAVERS: tuple[SaverSpec, ...] = (
    SaverSpec("memory", "InMemorySaver", False, ("memory",), _memory),
    SaverSpec("sqlite", "AsyncSqliteSaver", False, ("sqlite",), _sqlite),
    SaverSpec("official_postgres", "AsyncPostgresSaver", False, ("postgres",), _official_postgres),
    SaverSpec("official_redis", "AsyncRedisSaver", False, ("redis",), _official_redis),
    SaverSpec("postgres", "PostgresDurableSaver", True, ("postgres",), _ours_postgres),
    SaverSpec("redis", "RedisHotSaver", True, ("redis",), _ours_redis),
    SaverSpec(
        "dual_write_through",
        "DualSaver write_through",
        True,
        ("redis", "postgres"),
        _dual("write_through"),
    ),
    SaverSpec(
        "dual_write_behind",
        "DualSaver write_behind",
        True,
        ("redis", "postgres"),
        _dual("write_behind"),
    ),
    SaverSpec(
        "dual_write_behind_worker",
        "DualSaver write_behind + flush worker",
        True,
        ("redis", "postgres"),
        _dual_with_worker,
    ),
)


async def _cleanup_redis(client: aioredis.Redis, prefix: str) -> None:
    """Delete a saver's keys from a server we did not start (an embedded one is removed)."""
    batch = []
    async for key in client.scan_iter(match=f"*{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await client.delete(*batch)
            batch.clear()
    if batch:
        await client.delete(*batch)
    for index in (f"{prefix}_checkpoint", f"{prefix}_checkpoint_write"):
        with contextlib.suppress(aioredis.ResponseError):
            await client.execute_command("FT.DROPINDEX", index)


@contextlib.asynccontextmanager
async def open_saver(spec: SaverSpec, servers: Servers) -> AsyncIterator[OpenSaver]:
    """Open ``spec`` in a namespace of its own; everything is closed and dropped after."""
    handle = OpenSaver(spec=spec, saver=None, servers=servers)  # type: ignore[arg-type]
    handle.prefix = f"b{uuid.uuid4().hex[:10]}"
    handle.sqlite_path = servers.workdir / f"{spec.name}-{handle.prefix}.sqlite"
    async with contextlib.AsyncExitStack() as stack:
        if "postgres" in spec.stores:
            handle.pg_dsn = await create_database(servers.postgres_url, spec.name)
            stack.push_async_callback(drop_database, servers.postgres_url, handle.pg_dsn)
            handle._wal_conn = await asyncpg.connect(servers.postgres_url)
            stack.push_async_callback(handle._wal_conn.close)
        if "redis" in spec.stores:
            handle._redis = aioredis.Redis.from_url(servers.redis_url)
            stack.push_async_callback(handle._redis.aclose)
            if not servers.embedded_redis:
                stack.push_async_callback(_cleanup_redis, handle._redis, handle.prefix)
        handle.saver = await stack.enter_async_context(spec.opener(handle))
        yield handle
