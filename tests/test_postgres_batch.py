"""The batch path the chain's flusher uses: ``awrite_batch(records, seqs)``."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import ERROR

from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from langgraph_dualsaver.errors import DualSaverError, InvalidInputError
from langgraph_dualsaver.records import (
    DEFAULT_LIMITS,
    CheckpointRecord,
    WritesRecord,
    checkpoint_record,
    writes_record,
)

SERDE = JsonPlusSerializer()
TABLES = ("dualsaver_checkpoints", "dualsaver_blobs", "dualsaver_writes", "dualsaver_tombstones")


def cp_record(
    thread_id: str, parent: str | None = None, version: int = 1, **values: Any
) -> CheckpointRecord:
    values = values or {"x": thread_id}
    versions = dict.fromkeys(values, version)
    cp = generate_checkpoint(channel_values=values, channel_versions=versions)
    configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
    if parent:
        configurable["checkpoint_id"] = parent
    metadata = {"source": "loop", "step": 1}
    return checkpoint_record(
        SERDE, DEFAULT_LIMITS, {"configurable": configurable}, cp, metadata, versions
    )


def w_record(cp: CheckpointRecord, task_id: str, writes: list[tuple[str, Any]]) -> WritesRecord:
    config = {
        "configurable": {
            "thread_id": cp.thread_id,
            "checkpoint_ns": cp.checkpoint_ns,
            "checkpoint_id": cp.checkpoint_id,
        }
    }
    return writes_record(SERDE, DEFAULT_LIMITS, config, writes, task_id, "~__pregel_pull, n")


async def rows(dsn: str) -> dict[str, list[str]]:
    """Every row of every table, with ``xmin``: a row rewritten by an update shows up
    as changed even when its values are the same."""
    conn = await asyncpg.connect(dsn)
    try:
        return {
            table: sorted(
                repr(tuple(r)) for r in await conn.fetch(f"SELECT xmin::text, * FROM {table}")
            )
            for table in TABLES
        }
    finally:
        await conn.close()


@pytest.fixture
async def saver(pg_dsn: str) -> AsyncIterator[PostgresDurableSaver]:
    async with PostgresDurableSaver.from_conn_string(pg_dsn) as opened:
        await opened.asetup()
        yield opened


def batch() -> list[CheckpointRecord | WritesRecord]:
    first = cp_record("A")
    second = cp_record("A", first.checkpoint_id, version=2, x="A2")
    return [
        first,
        w_record(first, "t1", [("x", "w1"), (ERROR, "boom")]),
        second,
        cp_record("B"),
        w_record(second, "t2", [("x", "w2")]),
    ]


@pytest.mark.parametrize("with_seqs", [False, True], ids=["plain", "seqs"])
async def test_replaying_a_batch_changes_nothing(saver, pg_dsn, with_seqs) -> None:
    records = batch()
    seqs = list(range(1, len(records) + 1)) if with_seqs else None

    assert await saver.awrite_batch(records, seqs) == len(records)
    first = await rows(pg_dsn)
    assert await saver.awrite_batch(records, seqs) == len(records)
    # In reverse, each record at its own position (a replay never renumbers them):
    assert await saver.awrite_batch(records[::-1], seqs and seqs[::-1]) == len(records)

    assert await rows(pg_dsn) == first  # same rows, none rewritten (same xmin)
    latest = await saver.aget_tuple({"configurable": {"thread_id": "A", "checkpoint_ns": ""}})
    assert latest.checkpoint["channel_values"] == {"x": "A2"}
    assert latest.pending_writes == [("t2", "x", "w2")]


async def test_special_writes_overwrite_ordinary_writes_keep_the_first(saver) -> None:
    cp = cp_record("A")
    await saver.awrite_batch([cp])
    await saver.awrite_batch([w_record(cp, "t", [("x", 1), (ERROR, "first")])])
    await saver.awrite_batch([w_record(cp, "t", [("x", 2), (ERROR, "second")])])
    # And both rules inside one batch, which holds the same keys twice.
    await saver.awrite_batch(
        [w_record(cp, "u", [("x", 1), (ERROR, "a")]), w_record(cp, "u", [("x", 2), (ERROR, "b")])]
    )

    tup = await saver.aget_tuple(
        {"configurable": {"thread_id": "A", "checkpoint_ns": "", "checkpoint_id": cp.checkpoint_id}}
    )
    assert tup.pending_writes == [
        ("t", ERROR, "second"),
        ("t", "x", 1),
        ("u", ERROR, "b"),
        ("u", "x", 1),
    ]


async def test_records_queued_before_a_delete_are_skipped(saver, pg_dsn) -> None:
    old = cp_record("A")
    assert await saver.awrite_batch([old], [5]) == 1

    await saver.adelete_thread("A", tombstone_seq=10)
    stale, fresh, other = cp_record("A", old.checkpoint_id), cp_record("A"), cp_record("B")
    applied = await saver.awrite_batch([stale, fresh, other], [9, 12, 3])

    assert applied == 2
    listed = [t.checkpoint["id"] async for t in saver.alist(None)]
    assert sorted(listed) == sorted([fresh.checkpoint_id, other.checkpoint_id])
    # The tombstone only ever rises: a later delete with a lower seq keeps 10.
    await saver.adelete_thread("A", tombstone_seq=4)
    assert await saver.awrite_batch([stale], [10]) == 0
    assert await saver.awrite_batch([stale], [11]) == 1
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT deleted_seq FROM dualsaver_tombstones") == 10
    finally:
        await conn.close()


BAD_RECORDS = {
    # Built past validation, as a corrupt outbox entry could be. PostgreSQL text cannot
    # hold NUL; metadata that is not JSON fails the ::jsonb cast inside the insert.
    "nul-thread": lambda: dataclasses.replace(cp_record("C"), thread_id="C\x00"),
    "bad-json": lambda: dataclasses.replace(cp_record("C"), metadata=b"{not json"),
}


@pytest.mark.parametrize("bad", sorted(BAD_RECORDS))
@pytest.mark.parametrize("with_seqs", [False, True], ids=["plain", "seqs"])
async def test_a_batch_is_one_transaction(saver, pg_dsn, with_seqs, bad) -> None:
    good = batch()
    records = [*good, BAD_RECORDS[bad]()]
    seqs = list(range(len(records))) if with_seqs else None
    empty = await rows(pg_dsn)

    with pytest.raises(InvalidInputError, match="PostgreSQL rejected the input") as raised:
        await saver.awrite_batch(records, seqs)

    assert isinstance(raised.value, DualSaverError)
    assert await rows(pg_dsn) == empty
    assert await saver.awrite_batch(good, seqs and seqs[:-1]) == len(good)


async def test_seqs_must_match_the_records(saver) -> None:
    with pytest.raises(InvalidInputError, match="got 1 seqs for 2 records"):
        await saver.awrite_batch([cp_record("A"), cp_record("B")], [1])


async def test_overlapping_batches_and_deletes_never_deadlock(saver) -> None:
    threads = [f"T{i}" for i in range(4)]
    rng = random.Random(7)

    async def one(i: int) -> None:
        if i % 5 == 4:
            await saver.adelete_thread(rng.choice(threads), tombstone_seq=i)
            return
        order = rng.sample(threads, len(threads))
        await saver.awrite_batch([cp_record(t) for t in order], [1000 + i] * len(order))

    await asyncio.gather(*(one(i) for i in range(40)))
    assert len([t async for t in saver.alist(None)]) > 0


async def test_a_write_of_a_deleted_run_that_arrives_late_is_dropped(saver, pg_dsn) -> None:
    """A rolled-back run's task may still write while the run is deleted; its write
    reaches PostgreSQL after delete_for_runs (the chain's flush), and must leave no trace."""
    cp = generate_checkpoint(channel_values={"x": 1}, channel_versions={"x": 1})
    config = {"configurable": {"thread_id": "R", "checkpoint_ns": ""}}
    metadata = {"source": "loop", "step": 1, "run_id": "run-1"}
    doomed = checkpoint_record(SERDE, DEFAULT_LIMITS, config, cp, metadata, {"x": 1})
    kept = cp_record("R", doomed.checkpoint_id, version=2, x=2)
    await saver.awrite_batch([doomed, kept], [1, 2])
    await saver.adelete_for_runs(["run-1"])
    late = w_record(doomed, "cancelled", [(ERROR, "cancelled")])
    alive = w_record(kept, "t", [("x", "ok")])
    assert await saver.awrite_batch([late, alive], [3, 4]) == 2  # dropped, not refused
    conn = await asyncpg.connect(pg_dsn)
    try:
        written = await conn.fetch("SELECT checkpoint_id, task_id FROM dualsaver_writes")
    finally:
        await conn.close()
    assert [tuple(r) for r in written] == [(kept.checkpoint_id, "t")]
