"""Where the PostgreSQL tier's rows live: plain tables, or every thread table
hash-partitioned by ``thread_id`` (``partitions=N``).

Partitioning is chosen when ``setup()`` creates the tables, and only then: a database
(or schema) set up without it keeps its plain tables, and ``partitions=N`` on it is
refused with a ``ConfigurationError`` that says how to move (see ``docs/scaling.md``),
never converted behind the caller's back (rewriting every row of a live table is an
operator's decision). Without ``partitions`` a saver uses either layout as it finds it:
every statement is the same on both.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from langgraph_dualsaver.durable import sql as sql
from langgraph_dualsaver.errors import ConfigurationError

__all__ = ["MAX_PARTITIONS", "TableLayout", "create_partitioned", "layout_problem",
           "partition_count", "prepare", "read_layout"]  # fmt: skip

MAX_PARTITIONS = 1024
"""Most hash partitions per table (each is a table with its own indexes and files)."""

TableLayout = tuple[str, int]
"""A table's ``pg_class.relkind`` (``"p"`` partitioned, ``"r"`` plain) and partition count."""


def partition_count(value: object) -> int | None:
    """``value`` if it is a valid ``partitions`` setting (``None``, or an ``int`` from 1
    to ``MAX_PARTITIONS``); ``ConfigurationError`` otherwise."""
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= MAX_PARTITIONS:
        raise ConfigurationError(
            f"partitions must be None or an int from 1 to {MAX_PARTITIONS}, got {value!r}"
        )
    return value


async def read_layout(conn: asyncpg.Connection) -> dict[str, TableLayout]:
    """The thread tables that exist (where ``search_path`` finds them) and their layout."""
    rows = await conn.fetch(sql.TABLE_LAYOUT, list(sql.THREAD_TABLES))
    return {row["name"]: (row["kind"], int(row["partitions"])) for row in rows}


def layout_problem(layout: Mapping[str, TableLayout], partitions: int) -> str | None:
    """Why existing tables do not match ``partitions=N`` (``None`` when they do)."""
    plain = sorted(name for name, (kind, _) in layout.items() if kind != "p")
    if plain:
        return (
            f"{', '.join(plain)} {'was' if len(plain) == 1 else 'were'} created without "
            f"partitions, and partitions={partitions} applies only when setup() creates "
            "the tables. Keep using them without partitions=, or set up a new database or "
            "schema with partitions= and copy the threads into it (docs/scaling.md)"
        )
    other = sorted({count for _, count in layout.values()} - {partitions})
    if other:
        return (
            f"the tables have {other[0]} hash partitions, not {partitions}: pass "
            f"partitions={other[0]} (or none); the count is fixed when the tables are created"
        )
    return None


async def create_partitioned(
    conn: asyncpg.Connection, tables: list[str], partitions: int, timeout: float
) -> None:
    """``tables`` (thread tables), each with ``partitions`` hash partitions, in one
    transaction."""
    async with conn.transaction():
        for table in tables:
            await conn.execute(sql.PARTITIONED_TABLES[table], timeout=timeout)
            for remainder in range(partitions):
                await conn.execute(sql.partition_sql(table, partitions, remainder), timeout=timeout)


async def prepare(
    conn: asyncpg.Connection, partitions: int | None, where: str, timeout: float
) -> None:
    """Before the migrations run: with ``partitions``, check that the thread tables that
    exist are partitioned so, then create the missing ones partitioned (all of them in
    a new database). Call under the setup lock."""
    if partitions is None:
        return
    layout = await read_layout(conn)
    problem = layout_problem(layout, partitions)
    if problem is not None:
        raise ConfigurationError(f"{where}: {problem}")
    missing = [table for table in sql.THREAD_TABLES if table not in layout]
    if missing:
        await create_partitioned(conn, missing, partitions, timeout)
