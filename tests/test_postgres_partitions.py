"""``partitions=N``: every thread table hash-partitioned by ``thread_id``.

The saver works the same on it (the conformance suite, the chain's guarded batch with
its tombstones and rolled-back runs, tenants); the rows are in the partitions; the
layout is the migrated one but partitioned, and follows the rules a Citus distribution
by ``thread_id`` needs (read from a real database's catalog, for both layouts).
Partitioning applies when ``setup()`` creates the tables: on tables created otherwise
it is refused, and nothing is changed. Which partitions each statement reads is
``test_postgres_pruning``'s subject.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import ERROR

from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.durable import sql as sql
from langgraph_dualsaver.durable.layout import MAX_PARTITIONS, layout_problem
from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from langgraph_dualsaver.errors import ConfigurationError
from langgraph_dualsaver.records import (
    DEFAULT_LIMITS,
    CheckpointRecord,
    WritesRecord,
    checkpoint_record,
    writes_record,
)
from tests.conformance import assert_full_conformance
from tests.helpers import config, eventually, fetch, ids_of, put_chain
from tests.servers import fresh_database

SERDE = JsonPlusSerializer()
REFERENCE_TABLES = {"dualsaver_migrations", "dualsaver_settings"}
"""The tables not keyed by thread (Citus: reference tables)."""


async def set_up(dsn: str, **options: Any) -> None:
    async with PostgresDurableSaver.from_conn_string(dsn, **options) as saver:
        await saver.asetup()


async def partitions_of(dsn: str, schema: str = "public") -> dict[str, int]:
    """Per partitioned ``dualsaver_*`` table of ``schema``: its number of hash partitions,
    all of them in ``schema`` too."""
    rows = await fetch(
        dsn,
        "SELECT p.relname AS parent, count(c.oid) AS n, "
        "       bool_and(c.relnamespace = p.relnamespace) AS same_schema "
        "FROM pg_partitioned_table AS pt JOIN pg_class AS p ON p.oid = pt.partrelid "
        "JOIN pg_inherits AS i ON i.inhparent = p.oid JOIN pg_class AS c ON c.oid = i.inhrelid "
        "WHERE p.relnamespace = $1::regnamespace AND c.relkind = 'r' "
        "  AND pt.partstrat = 'h' GROUP BY p.relname",
        schema,
    )
    assert all(r["same_schema"] for r in rows)
    return {r["parent"]: r["n"] for r in rows}


def cp_record(thread_id: str, parent: str | None = None, **metadata: Any) -> CheckpointRecord:
    cp = generate_checkpoint(channel_values={"x": thread_id}, channel_versions={"x": 1})
    configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
    if parent:
        configurable["checkpoint_id"] = parent
    return checkpoint_record(
        SERDE, DEFAULT_LIMITS, {"configurable": configurable}, cp,
        {"source": "loop", "step": 1, **metadata}, {"x": 1},
    )  # fmt: skip


def w_record(cp: CheckpointRecord, task_id: str, writes: list[tuple[str, Any]]) -> WritesRecord:
    cfg = config(cp.thread_id, cp.checkpoint_id, cp.checkpoint_ns)
    return writes_record(SERDE, DEFAULT_LIMITS, cfg, writes, task_id)


# -- the saver on partitioned tables -----------------------------------------------------


async def test_conformance_with_partitions(pg_dsn: str) -> None:
    await assert_full_conformance(
        "PostgresDurableSaver(partitions=4)",
        lambda: PostgresDurableSaver.from_conn_string(pg_dsn, partitions=4),
    )
    assert await partitions_of(pg_dsn) == dict.fromkeys(sql.THREAD_TABLES, 4)


async def test_rows_live_in_their_threads_partition(pg_dsn: str) -> None:
    async with PostgresDurableSaver.from_conn_string(pg_dsn, partitions=4) as saver:
        await saver.asetup()
        for n in range(16):
            record = cp_record(f"thread-{n}")
            await saver.awrite_batch([record, w_record(record, "t", [("x", n)])])
    rows = await fetch(
        pg_dsn,
        "SELECT thread_id, array_agg(DISTINCT tableoid::regclass::text) AS parts FROM ("
        "  SELECT tableoid, thread_id FROM dualsaver_checkpoints UNION ALL"
        "  SELECT tableoid, thread_id FROM dualsaver_blobs UNION ALL"
        "  SELECT tableoid, thread_id FROM dualsaver_writes) AS r GROUP BY thread_id",
    )
    assert len(rows) == 16
    suffixes = {tuple(sorted(p.rsplit("_", 1)[1] for p in r["parts"])) for r in rows}
    assert all(len(set(s)) == 1 for s in suffixes)  # one remainder per thread, every table
    assert len({s[0] for s in suffixes}) > 1  # and the threads spread over partitions


async def test_the_guarded_batch_keeps_its_rules_on_partitions(pg_dsn: str) -> None:
    """Tombstones refuse what was queued before a delete, rows written after it stay,
    and a late write of a rolled-back run is dropped: ``dualsaver_write_batch`` on
    partitioned tables."""
    async with PostgresDurableSaver.from_conn_string(pg_dsn, partitions=4) as saver:
        await saver.asetup()
        old = cp_record("A")
        assert await saver.awrite_batch([old, cp_record("B")], [5, 6]) == 2
        await saver.adelete_thread("A", tombstone_seq=10)
        stale, fresh = cp_record("A", old.checkpoint_id), cp_record("A")
        assert await saver.awrite_guarded([stale, fresh, cp_record("C")], [9, 12, 3]) == [0]
        listed = sorted([t.checkpoint["id"] async for t in saver.alist(config("A"))])
        assert listed == [fresh.checkpoint_id]

        doomed = cp_record("R", run_id="run-1")
        kept = cp_record("R", doomed.checkpoint_id)
        await saver.awrite_batch([doomed, kept], [20, 21])
        await saver.adelete_for_runs(["run-1"])
        late = w_record(doomed, "cancelled", [(ERROR, "cancelled")])
        assert await saver.awrite_batch([late, w_record(kept, "t", [("x", "ok")])], [22, 23]) == 2
        written = await fetch(pg_dsn, "SELECT checkpoint_id, task_id FROM dualsaver_writes")
        assert [tuple(r) for r in written] == [(kept.checkpoint_id, "t")]


@pytest.mark.parametrize("mode", ["write_behind", "write_through"])
async def test_the_chain_flushes_into_partitions(
    redis_url: str, pg_dsn: str, redis_prefix: str, mode: Any
) -> None:
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, mode=mode, partitions=4, background_flush=False
    ) as saver:
        await saver.asetup()
        first = ids_of(await put_chain(saver, "reused", 3))
        await saver.adelete_thread("reused")
        again = ids_of(await put_chain(saver, "reused", 2))
        other = ids_of(await put_chain(saver, "other", 2))
        await saver.aflush()

        async def durable(thread_id: str) -> list[str]:
            return sorted(
                r["checkpoint_id"]
                for r in await fetch(
                    pg_dsn,
                    "SELECT checkpoint_id FROM dualsaver_checkpoints WHERE thread_id = $1",
                    thread_id,
                )
            )

        async def flushed() -> bool:
            return await durable("reused") == sorted(again)

        await eventually(flushed, what="the reused thread's new checkpoints in PostgreSQL")
        assert not set(first) & set(await durable("reused"))
        assert await durable("other") == sorted(other)
    assert await partitions_of(pg_dsn) == dict.fromkeys(sql.THREAD_TABLES, 4)


async def test_a_tenant_schema_gets_its_own_partitions(pg_dsn: str) -> None:
    await set_up(pg_dsn, schema="tenant_a", partitions=3)
    await set_up(pg_dsn, schema="tenant_b")
    assert await partitions_of(pg_dsn, "tenant_a") == dict.fromkeys(sql.THREAD_TABLES, 3)
    assert await partitions_of(pg_dsn, "tenant_b") == {}
    assert await partitions_of(pg_dsn, "public") == {}
    async with (
        PostgresDurableSaver.from_conn_string(pg_dsn, schema="tenant_a", partitions=3) as a,
        PostgresDurableSaver.from_conn_string(pg_dsn, schema="tenant_b") as b,
    ):
        await a.asetup()
        await a.awrite_batch([cp_record("shared")])
        assert await a.aget_tuple(config("shared")) is not None
        assert await b.aget_tuple(config("shared")) is None
        await a.aprune(["shared"], strategy="delete")
        assert await a.aget_tuple(config("shared")) is None


# -- when partitioning applies --------------------------------------------------------------


async def test_partitions_on_tables_created_without_them_is_refused(pg_dsn: str) -> None:
    await set_up(pg_dsn)
    async with PostgresDurableSaver.from_conn_string(pg_dsn) as saver:
        await saver.awrite_batch([cp_record("kept")])
    before = await fetch(pg_dsn, "SELECT v FROM dualsaver_migrations ORDER BY v")

    with pytest.raises(ConfigurationError, match="created without partitions") as refused:
        await set_up(pg_dsn, partitions=4)
    assert "dualsaver_checkpoints" in str(refused.value)
    assert "docs/scaling.md" in str(refused.value)
    assert await partitions_of(pg_dsn) == {}
    assert await fetch(pg_dsn, "SELECT v FROM dualsaver_migrations ORDER BY v") == before
    async with PostgresDurableSaver.from_conn_string(pg_dsn) as saver:  # still works
        assert await saver.aget_tuple(config("kept")) is not None


async def test_a_partitioned_database_needs_no_setting_but_refuses_another_count(
    pg_dsn: str,
) -> None:
    await set_up(pg_dsn, partitions=4)
    await set_up(pg_dsn, partitions=4)  # idempotent
    await set_up(pg_dsn)  # without partitions=, the layout is used as found
    with pytest.raises(ConfigurationError, match="4 hash partitions, not 2"):
        await set_up(pg_dsn, partitions=2)
    async with PostgresDurableSaver.from_conn_string(pg_dsn) as saver:
        await saver.awrite_batch([cp_record("t")])
        assert await saver.aget_tuple(config("t")) is not None
    assert await partitions_of(pg_dsn) == dict.fromkeys(sql.THREAD_TABLES, 4)


@pytest.mark.parametrize("bad", [0, -1, MAX_PARTITIONS + 1, "4", 4.0, True])
def test_a_bad_partition_count_is_refused_before_any_io(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="partitions must be"):
        PostgresDurableSaver.from_conn_string("postgresql://nowhere.invalid/db", partitions=bad)


def test_layout_problem_names_what_does_not_match() -> None:
    partitioned = dict.fromkeys(sql.THREAD_TABLES, ("p", 4))
    assert layout_problem({}, 4) is None
    assert layout_problem(partitioned, 4) is None
    problem = layout_problem({**partitioned, "dualsaver_blobs": ("r", 0)}, 4)
    assert problem is not None and problem.startswith("dualsaver_blobs was created without")
    assert "8 hash partitions, not 4" in str(
        layout_problem(dict.fromkeys(partitioned, ("p", 8)), 4)
    )


async def test_a_database_at_migration_8_is_migrated_and_its_batches_still_guarded(
    pg_dsn: str,
) -> None:
    """An existing database gets migration 9 (the batch function) by ``setup()``."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        for version, migration in enumerate(sql.MIGRATIONS[:9]):
            await conn.execute(migration)
            if version:
                await conn.execute(sql.RECORD_MIGRATION, version)
        await conn.execute(
            "INSERT INTO dualsaver_tombstones (thread_id, deleted_seq) VALUES ('A', 10)"
        )
    finally:
        await conn.close()
    async with PostgresDurableSaver.from_conn_string(pg_dsn) as saver:
        await saver.asetup()
        assert await saver.awrite_guarded([cp_record("A"), cp_record("A")], [9, 11]) == [0]
    versions = [r["v"] for r in await fetch(pg_dsn, "SELECT v FROM dualsaver_migrations")]
    assert max(versions) == len(sql.MIGRATIONS) - 1 >= 9


# -- the layout, read from the catalog -------------------------------------------------------


async def columns_and_keys(dsn: str) -> dict[str, Any]:
    """Per ``dualsaver_*`` table (not partition): columns in order with type, collation,
    nullability and default, and its primary key's columns."""
    columns = await fetch(
        dsn,
        "SELECT c.relname AS t, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS ty,"
        "       coalesce(co.collname, '') AS coll, a.attnotnull,"
        "       pg_get_expr(d.adbin, d.adrelid) AS dflt "
        "FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 "
        "LEFT JOIN pg_collation AS co ON co.oid = a.attcollation AND a.attcollation <> 100 "
        "LEFT JOIN pg_attrdef AS d ON d.adrelid = c.oid AND d.adnum = a.attnum "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') "
        "  AND NOT c.relispartition AND c.relname LIKE 'dualsaver\\_%' AND NOT a.attisdropped "
        "ORDER BY c.relname, a.attnum",
    )
    keys = await primary_keys(dsn)
    found: dict[str, Any] = {}
    for r in columns:
        found.setdefault(r["t"], {"key": keys.get(r["t"]), "columns": []})["columns"].append(
            (r["attname"], r["ty"], r["coll"], r["attnotnull"], r["dflt"])
        )
    return found


async def primary_keys(dsn: str) -> dict[str, list[str]]:
    rows = await fetch(
        dsn,
        "SELECT c.relname AS t, array_agg(a.attname ORDER BY k.n) AS cols "
        "FROM pg_constraint AS con JOIN pg_class AS c ON c.oid = con.conrelid "
        "CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, n) "
        "JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum = k.attnum "
        "WHERE con.contype = 'p' AND c.relnamespace = 'public'::regnamespace "
        "  AND NOT c.relispartition AND c.relname LIKE 'dualsaver\\_%' GROUP BY c.relname",
    )
    return {r["t"]: list(r["cols"]) for r in rows}


def test_the_partitioned_layout_is_the_migrated_one(postgres_url: str) -> None:
    with fresh_database(postgres_url) as plain, fresh_database(postgres_url) as partitioned:
        asyncio.run(set_up(plain))
        asyncio.run(set_up(partitioned, partitions=4))
        migrated = asyncio.run(columns_and_keys(plain))
        assert asyncio.run(columns_and_keys(partitioned)) == migrated
        assert set(migrated) == set(sql.THREAD_TABLES) | REFERENCE_TABLES


@pytest.mark.parametrize("partitions", [None, 4])
async def test_the_schema_follows_the_rules_of_a_distribution_by_thread(
    pg_dsn: str, partitions: int | None
) -> None:
    """What ``create_distributed_table(..., 'thread_id')`` needs: every table with a
    thread_id leads its primary key and every unique index with it; the others are the
    two reference tables; no foreign keys; no sequences, serial or identity columns."""
    await set_up(pg_dsn, partitions=partitions)
    keys = await primary_keys(pg_dsn)
    threaded = {
        r["t"]
        for r in await fetch(
            pg_dsn,
            "SELECT c.relname AS t FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') "
            "  AND NOT c.relispartition AND a.attname = 'thread_id'",
        )
    }
    assert threaded == set(sql.THREAD_TABLES)
    assert set(keys) == threaded | REFERENCE_TABLES
    assert all(keys[t][0] == "thread_id" for t in threaded), keys
    unique = await fetch(
        pg_dsn,
        "SELECT c.relname AS t, i.indexrelid::regclass::text AS idx, "
        "       (SELECT attname FROM pg_attribute WHERE attrelid = c.oid AND attnum = i.indkey[0]) "
        "       AS first FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indrelid "
        "WHERE i.indisunique AND c.relnamespace = 'public'::regnamespace",
    )
    assert all(
        r["first"] == "thread_id" for r in unique if r["t"].startswith(tuple(sql.THREAD_TABLES))
    ), [tuple(r) for r in unique]
    assert not await fetch(pg_dsn, "SELECT conname FROM pg_constraint WHERE contype = 'f'")
    assert not await fetch(
        pg_dsn,
        "SELECT relname FROM pg_class WHERE relkind = 'S' "
        "AND relnamespace = 'public'::regnamespace",
    )
    assert not await fetch(
        pg_dsn,
        "SELECT a.attname FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid "
        "LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relname LIKE 'dualsaver\\_%' "
        "  AND (a.attidentity <> '' OR pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval%')",
    )
    if partitions:
        keyed = await fetch(
            pg_dsn,
            "SELECT c.relname AS t, pt.partstrat::text, a.attname FROM pg_partitioned_table AS pt "
            "JOIN pg_class AS c ON c.oid = pt.partrelid "
            "JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0]",
        )
        assert {r["t"]: (r["partstrat"], r["attname"]) for r in keyed} == dict.fromkeys(
            sql.THREAD_TABLES, ("h", "thread_id")
        )
