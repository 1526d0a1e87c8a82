"""Tenants: a PostgreSQL schema per app, as a Redis prefix per app.

Two apps in one database never see, delete or prune each other's threads, through the
chain or the PostgreSQL tier directly; a schema belongs to the first prefix that set it
up; setup is idempotent and locks only its own schema; without a schema the tables stay
where they always were; schema names are checked before they reach SQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import redis
from langgraph.checkpoint.base import CheckpointTuple
from typer.testing import CliRunner

from langgraph_dualsaver.chain.saver import DualSaver, Mode
from langgraph_dualsaver.cli.app import app as cli
from langgraph_dualsaver.durable import sql as sql
from langgraph_dualsaver.durable.saver import OWNER_PREFIX, PostgresDurableSaver
from langgraph_dualsaver.errors import ConfigurationError
from tests.conformance import assert_full_conformance
from tests.helpers import checkpoint, config, eventually, fetch, ids_of, put_chain
from tests.servers import fresh_prefix

MODES: list[Mode] = ["write_behind", "write_through"]


@pytest.fixture
def other_prefix(redis_url: str) -> Iterator[str]:
    with fresh_prefix(redis_url) as prefix:
        yield prefix


@asynccontextmanager
async def app(
    redis_url: str, pg_dsn: str, prefix: str, schema: str | None, mode: Mode = "write_behind"
) -> AsyncIterator[DualSaver]:
    """A set-up DualSaver for one app; only ``aflush`` flushes."""
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=prefix, schema=schema, mode=mode, background_flush=False
    ) as saver:
        await saver.asetup()
        yield saver


@asynccontextmanager
async def durable(pg_dsn: str, schema: str | None, **options: Any) -> AsyncIterator[Any]:
    """A set-up PostgresDurableSaver on its own pools."""
    async with PostgresDurableSaver.from_conn_string(pg_dsn, schema=schema, **options) as saver:
        await saver.asetup()
        yield saver


async def table_schemas(dsn: str) -> dict[str, set[str]]:
    """Per schema, the ``dualsaver_*`` tables information_schema shows there."""
    rows = await fetch(
        dsn,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_name LIKE 'dualsaver\\_%'",
    )
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row["table_schema"], set()).add(row["table_name"])
    return found


async def listed(saver: Any, thread_id: str | None = None) -> list[str]:
    """Checkpoint ids ``alist`` returns, for one thread or (``None``) for every thread."""
    cfg = None if thread_id is None else config(thread_id)
    return [_id(item) async for item in saver.alist(cfg)]


async def owners(dsn: str, schema: str) -> list[str]:
    """The owning prefix recorded in ``schema`` (a trusted test literal), if any."""
    query = f"SELECT value FROM {schema}.dualsaver_settings WHERE name = $1"
    return [r["value"] for r in await fetch(dsn, query, OWNER_PREFIX)]


def _id(item: CheckpointTuple | None) -> str | None:
    return None if item is None else item.config["configurable"]["checkpoint_id"]


async def latest(saver: Any, thread_id: str) -> str | None:
    return _id(await saver.aget_tuple(config(thread_id)))


# -- two apps, one database ----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_two_apps_in_one_database_see_only_their_own_threads(
    redis_url: str, pg_dsn: str, redis_prefix: str, other_prefix: str, mode: Mode
) -> None:
    async with (
        app(redis_url, pg_dsn, redis_prefix, "app_a", mode) as a,
        app(redis_url, pg_dsn, other_prefix, "app_b", mode) as b,
    ):
        a_shared = ids_of(await put_chain(a, "shared", 2))
        a_own = ids_of(await put_chain(a, "only_a", 1))
        b_shared = ids_of(await put_chain(b, "shared", 3))
        await a.aflush()
        await b.aflush()

        for saver, shared, everything in (
            (a, a_shared, a_shared + a_own),
            (b, b_shared, b_shared),
        ):
            for tier in (saver, saver.durable):
                assert await latest(tier, "shared") == shared[-1]
                assert sorted(await listed(tier, "shared")) == sorted(shared)
                assert sorted(await listed(tier)) == sorted(everything)
        assert await latest(b, "only_a") is None
        assert await latest(b.durable, "only_a") is None

    rows = await fetch(pg_dsn, "SELECT checkpoint_id FROM app_a.dualsaver_checkpoints")
    assert sorted(r["checkpoint_id"] for r in rows) == sorted(a_shared + a_own)
    rows = await fetch(pg_dsn, "SELECT checkpoint_id FROM app_b.dualsaver_checkpoints")
    assert sorted(r["checkpoint_id"] for r in rows) == sorted(b_shared)
    assert set(await table_schemas(pg_dsn)) == {"app_a", "app_b"}


async def test_deleting_and_pruning_in_one_app_leave_the_other_apps_threads(
    redis_url: str, pg_dsn: str, redis_prefix: str, other_prefix: str
) -> None:
    async with (
        app(redis_url, pg_dsn, redis_prefix, "app_a") as a,
        app(redis_url, pg_dsn, other_prefix, "app_b") as b,
    ):
        for saver in (a, b):
            await put_chain(saver, "deleted", 2)
            await put_chain(saver, "pruned", 3)
            await saver.aflush()
        b_deleted = await listed(b, "deleted")
        a_pruned = await listed(a, "pruned")

        await a.adelete_thread("deleted")
        await a.aprune(["pruned"], strategy="keep_latest")
        assert await listed(a, "deleted") == []
        assert len(await listed(a.durable, "pruned")) == 1
        assert await listed(b, "deleted") == await listed(b.durable, "deleted") == b_deleted
        assert len(await listed(b.durable, "pruned")) == 3

        # a's tombstone is a's alone: b keeps writing the thread a deleted.
        await put_chain(b, "deleted", 1, start=config("deleted", b_deleted[0]))
        await b.aflush()
        assert len(await listed(b.durable, "deleted")) == 3

        await b.aprune(["pruned"], strategy="delete")
        await b.durable.adelete_thread("deleted")
        assert await listed(b.durable, "pruned") == await listed(b.durable, "deleted") == []
        assert await listed(a.durable, "pruned") == a_pruned[:1]


async def test_durable_savers_alone_keep_to_their_schemas(pg_dsn: str) -> None:
    async with (
        durable(pg_dsn, None) as default,
        durable(pg_dsn, "app_a") as a,
        durable(pg_dsn, "select") as reserved_word,
    ):
        savers = (default, a, reserved_word)
        saved = [ids_of(await put_chain(s, "t", n)) for n, s in enumerate(savers, start=1)]
        for saver, ids in zip(savers, saved, strict=True):
            assert await latest(saver, "t") == ids[-1]
            assert sorted(await listed(saver)) == sorted(ids)

        await a.adelete_thread("t")
        await reserved_word.aprune(["t"], strategy="keep_latest")
        assert await listed(a) == []
        assert await listed(reserved_word) == saved[2][-1:]
        assert sorted(await listed(default)) == sorted(saved[0])
        # The durable saver alone has no prefix: it claims no schema.
        for schema in ("public", "app_a", "select"):
            assert await owners(pg_dsn, f'"{schema}"') == []


async def test_a_schema_saver_passes_the_whole_conformance_suite(pg_dsn: str) -> None:
    await assert_full_conformance(
        "PostgresDurableSaver(schema=...)",
        lambda: PostgresDurableSaver.from_conn_string(pg_dsn, schema="conformance"),
    )
    assert set(await table_schemas(pg_dsn)) == {"conformance"}


# -- ownership -------------------------------------------------------------------------------


async def test_a_schema_refuses_a_second_prefix_at_setup(
    redis_url: str, pg_dsn: str, redis_prefix: str, other_prefix: str
) -> None:
    async with app(redis_url, pg_dsn, redis_prefix, "owned"):
        pass
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=other_prefix, schema="owned", background_flush=False
    ) as intruder:
        with pytest.raises(ConfigurationError) as refused:
            await intruder.asetup()
    message = str(refused.value)
    for name in (redis_prefix, other_prefix, "owned", f"prefix={redis_prefix!r}"):
        assert repr(name) in message or name in message
    assert "schema of its own" in message
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{other_prefix}:*")) == []  # Redis untouched
    finally:
        client.close()
    async with app(redis_url, pg_dsn, redis_prefix, "owned"):  # the owner still may
        pass
    assert await owners(pg_dsn, "owned") == [redis_prefix]


async def test_setup_twice_and_from_two_savers_at_once_on_one_schema(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    async with (
        DualSaver.from_conn_string(redis_url, pg_dsn, prefix=redis_prefix, schema="app_a") as one,
        DualSaver.from_conn_string(redis_url, pg_dsn, prefix=redis_prefix, schema="app_a") as two,
    ):
        await asyncio.gather(one.asetup(), two.asetup())
        await asyncio.gather(one.asetup(), two.asetup())
        await one.asetup()
        await put_chain(one, "t", 1)
        await one.aflush()
        assert len(await listed(two.durable, "t")) == 1
    versions = await fetch(pg_dsn, "SELECT v FROM app_a.dualsaver_migrations ORDER BY v")
    assert [r["v"] for r in versions] == list(range(len(sql.MIGRATIONS)))
    assert await owners(pg_dsn, "app_a") == [redis_prefix]


async def test_setup_waits_only_for_a_setup_of_its_own_schema(pg_dsn: str) -> None:
    holder = await asyncpg.connect(pg_dsn)
    try:
        await holder.execute(sql.ADVISORY_LOCK_SETUP, sql.setup_lock_key("app_a"))
        async with durable(pg_dsn, "app_b"), durable(pg_dsn, None):
            pass  # neither waited for app_a's lock
        async with PostgresDurableSaver.from_conn_string(pg_dsn, schema="app_a") as a:
            waiting = asyncio.ensure_future(a.asetup())
            await eventually(
                lambda: _advisory_lock_awaited(holder), what="app_a's setup waits for its lock"
            )
            assert not waiting.done()
            await holder.execute(sql.ADVISORY_UNLOCK_SETUP, sql.setup_lock_key("app_a"))
            await waiting
    finally:
        await holder.close()
    assert set(await table_schemas(pg_dsn)) == {"public", "app_a", "app_b"}


async def _advisory_lock_awaited(conn: asyncpg.Connection) -> bool:
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    return bool(await conn.fetchval(query))


# -- the default location -------------------------------------------------------------------


async def test_without_a_schema_the_tables_stay_where_they_always_were(
    redis_url: str, pg_dsn: str, redis_prefix: str, other_prefix: str
) -> None:
    schemas_before = await fetch(pg_dsn, "SELECT nspname FROM pg_namespace ORDER BY nspname")
    async with (
        app(redis_url, pg_dsn, redis_prefix, None) as a,
        app(redis_url, pg_dsn, other_prefix, None),  # as before: no owner is recorded
    ):
        assert a.durable.schema is None
        await put_chain(a, "t", 1)
        await a.aflush()
    assert await fetch(pg_dsn, "SELECT nspname FROM pg_namespace ORDER BY nspname") == (
        schemas_before
    )
    assert await table_schemas(pg_dsn) == {
        "public": {
            "dualsaver_migrations", "dualsaver_checkpoints", "dualsaver_blobs",
            "dualsaver_writes", "dualsaver_tombstones", "dualsaver_settings",
            "dualsaver_deleted_checkpoints", "dualsaver_leases",
        }
    }  # fmt: skip
    functions = await fetch(
        pg_dsn,
        "SELECT routine_schema FROM information_schema.routines "
        "WHERE routine_name = 'dualsaver_write_batch'",
    )
    assert [r["routine_schema"] for r in functions] == ["public"]
    assert await owners(pg_dsn, "public") == []
    assert len(await fetch(pg_dsn, "SELECT * FROM public.dualsaver_checkpoints")) == 1


# -- names and pools ---------------------------------------------------------------------------


@pytest.mark.pure
@pytest.mark.parametrize(
    "name",
    ["", "App", "1app", "app-b", "app b", 'a"; DROP TABLE x; --', "pg_app", "information_schema",
     "a" * 64, "café", "$user", 5],
)  # fmt: skip
def test_a_bad_schema_name_is_refused_before_any_sql(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="schema must be a lower-case PostgreSQL name"):
        PostgresDurableSaver(dsn="postgresql://nowhere.invalid/db", schema=name)


@pytest.mark.pure
@pytest.mark.parametrize("name", ["a", "_app", "app_2", "select", "a" * 63])
def test_a_good_schema_name_is_quoted_whole(name: str) -> None:
    assert PostgresDurableSaver.schema_settings(name) == {"search_path": f'"{name}"'}
    assert sql.create_schema_sql(name) == f'CREATE SCHEMA IF NOT EXISTS "{name}"'


async def test_a_callers_pool_must_carry_the_schemas_search_path(pg_dsn: str) -> None:
    for settings in (None, {"search_path": "app_a, public"}):
        pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1, server_settings=settings)
        try:
            saver = PostgresDurableSaver.from_pool(pool, schema="app_a")
            with pytest.raises(ConfigurationError, match=r"schema_settings\('app_a'\)"):
                await saver.asetup()
        finally:
            await pool.close()
    assert await table_schemas(pg_dsn) == {}

    settings = PostgresDurableSaver.schema_settings("app_a")
    async with asyncpg.create_pool(pg_dsn, server_settings=settings) as pool:
        saver = PostgresDurableSaver.from_pool(pool, schema="app_a")
        await saver.asetup()
        ids = ids_of(await put_chain(saver, "t", 2))
        assert await latest(saver, "t") == ids[-1]
    assert set(await table_schemas(pg_dsn)) == {"app_a"}


# -- the read path's cost ----------------------------------------------------------------------


class QueryLog:
    """The statements a connection sent (an asyncpg query logger)."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def __call__(self, record: Any) -> None:
        self.queries.append(record.query)

    async def taken(self) -> list[str]:
        """The statements logged so far, then none: asyncpg reports them with
        ``call_soon``, so the callbacks queued before this one run first."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_soon(done.set_result, None)
        await done
        taken, self.queries = self.queries, []
        return taken


async def test_a_schema_adds_no_round_trip_to_the_read_path(pg_dsn: str) -> None:
    log = QueryLog()
    async with durable(pg_dsn, "app_a", min_size=1, max_size=1) as owned:
        await put_chain(owned, "t", 1)
        pool = await owned._res.get()  # the one connection of the saver's own pool
        async with pool.acquire() as conn:
            conn.add_query_logger(log)
        for _ in range(3):
            assert await latest(owned, "t")
            assert await log.taken() == [sql.GET_LATEST]

    settings = PostgresDurableSaver.schema_settings("app_a")
    # No reset on release: asyncpg's default one is the pool's own statement, not ours.
    async with asyncpg.create_pool(
        pg_dsn,
        min_size=1,
        max_size=1,
        server_settings=settings,
        init=_logging_to(log),
        reset=_no_reset,
    ) as pool:
        callers = PostgresDurableSaver.from_pool(pool, schema="app_a")
        assert await latest(callers, "t")
        first = await log.taken()  # asyncpg also introspects types on a new connection
        assert first[0] == sql.SEARCH_PATH and first[-1] == sql.GET_LATEST
        assert first.count(sql.SEARCH_PATH) == 1
        for _ in range(3):
            assert await latest(callers, "t")
            assert await log.taken() == [sql.GET_LATEST]


async def _no_reset(conn: asyncpg.Connection) -> None:
    """A pool reset that sends nothing."""


def _logging_to(log: QueryLog) -> Any:
    async def init(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(log)

    return init


# -- configuration from the environment and the command line -----------------------------------


def test_from_env_and_the_cli_open_the_apps_schema(
    redis_url: str, pg_dsn: str, redis_prefix: str, other_prefix: str, monkeypatch: Any
) -> None:
    env = {
        "DUALSAVER_REDIS_URL": redis_url,
        "DUALSAVER_POSTGRES_URL": pg_dsn,
        "DUALSAVER_PREFIX": redis_prefix,
        "DUALSAVER_SCHEMA": "from_env",
        "COLUMNS": "200",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with DualSaver.from_env(background_flush=False) as saver:
        assert saver.durable.schema == "from_env"
        saver.put(config("t"), checkpoint("v", 1), {"source": "loop", "step": 0}, {"x": 1})
        saver.flush()

    runner = CliRunner()
    status = runner.invoke(cli, ["status", "--json"], env=env)
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert report["schema"] == "from_env"
    assert report["postgres"]["schema_version"] == len(sql.MIGRATIONS) - 1
    assert report["threads"]["durable"] == 1

    elsewhere = runner.invoke(cli, ["--schema", "elsewhere", "status", "--json"], env=env)
    assert json.loads(elsewhere.stdout)["postgres"]["schema_version"] == -1

    intruder = runner.invoke(cli, ["--prefix", other_prefix, "threads"], env=env)
    assert intruder.exit_code == 1
    assert f"belongs to Redis prefix {redis_prefix!r}, not {other_prefix!r}" in intruder.stderr

    bad = runner.invoke(cli, ["--schema", "Bad-Name", "threads"], env=env)
    assert bad.exit_code == 2
    assert "schema must be a lower-case PostgreSQL name" in bad.stderr
