"""Bad input: a specific error naming what was wrong, nothing written, no other thread
touched. Each test compares every table before and after the call."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

from langgraph_dualsaver.errors import (
    CheckpointTooLargeError,
    DualSaverError,
    InvalidIdError,
    InvalidMetadataError,
    MissingThreadIdError,
    SerializationError,
)
from langgraph_dualsaver.postgres import PostgresDurableSaver
from langgraph_dualsaver.records import Limits
from tests.refusing_serde import RefusingSerde, Unstorable

TABLES = (
    "dualsaver_checkpoints",
    "dualsaver_blobs",
    "dualsaver_writes",
    "dualsaver_tombstones",
    "dualsaver_migrations",
)
LIMITS = Limits(max_id_bytes=800, max_value_bytes=4096)
OTHER = "other-thread"


async def tables(dsn: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            table: sorted(repr(tuple(row)) for row in await conn.fetch(f"SELECT * FROM {table}"))
            for table in TABLES
        }
    finally:
        await conn.close()


@pytest.fixture
async def saver(pg_dsn: str) -> AsyncIterator[PostgresDurableSaver]:
    """A set-up saver holding one other thread (a checkpoint and a pending write)."""
    async with PostgresDurableSaver.from_conn_string(
        pg_dsn, limits=LIMITS, serde=RefusingSerde()
    ) as opened:
        await opened.asetup()
        saved = await opened.aput(
            config(OTHER),
            generate_checkpoint(channel_values={"x": "kept"}, channel_versions={"x": 1}),
            {"source": "input"},
            {"x": 1},
        )
        await opened.aput_writes(saved, [("x", "pending")], "task-1", "~__pregel_pull, n")
        yield opened


@pytest.fixture
async def before(saver: PostgresDurableSaver, pg_dsn: str) -> dict[str, list[str]]:
    state = await tables(pg_dsn)
    assert state["dualsaver_checkpoints"] and state["dualsaver_writes"]
    return state


def config(thread_id: Any = None, **configurable: Any) -> dict[str, Any]:
    if thread_id is not None:
        configurable["thread_id"] = thread_id
    return {"configurable": {"checkpoint_ns": "", **configurable}}


async def assert_untouched(saver: PostgresDurableSaver, dsn: str, before: dict) -> None:
    assert await tables(dsn) == before
    other = await saver.aget_tuple(config(OTHER))
    assert other is not None
    assert other.checkpoint["channel_values"] == {"x": "kept"}
    assert [w[2] for w in other.pending_writes] == ["pending"]


async def put(saver: PostgresDurableSaver, cfg: dict, *, values=None, metadata=None, cp_id=None):
    values = {"x": "v"} if values is None else values
    cp = generate_checkpoint(channel_values=values, channel_versions=dict.fromkeys(values, 1))
    if cp_id is not None:
        cp["id"] = cp_id
    return await saver.aput(cfg, cp, metadata or {"source": "loop"}, dict.fromkeys(values, 1))


def valid_checkpoint_config() -> dict[str, Any]:
    return config(f"t-{uuid.uuid4()}", checkpoint_id="1ef00000-0000-6000-8000-000000000000")


@pytest.mark.parametrize("operation", ["put", "put_writes"])
async def test_missing_thread_id(saver, pg_dsn, before, operation) -> None:
    with pytest.raises(MissingThreadIdError, match=r"thread_id.* is missing") as raised:
        if operation == "put":
            await put(saver, config())
        else:
            await saver.aput_writes(config(checkpoint_id="c1"), [("x", 1)], "task")
    assert isinstance(raised.value, KeyError | ValueError)
    assert isinstance(raised.value, DualSaverError)
    await assert_untouched(saver, pg_dsn, before)


@pytest.mark.parametrize("operation", ["put", "put_writes"])
async def test_empty_thread_id(saver, pg_dsn, before, operation) -> None:
    with pytest.raises(MissingThreadIdError, match=r"thread_id.* is empty"):
        if operation == "put":
            await put(saver, config(""))
        else:
            await saver.aput_writes(config("", checkpoint_id="c1"), [("x", 1)], "task")
    await assert_untouched(saver, pg_dsn, before)


@pytest.mark.parametrize(
    "where", ["thread_id", "checkpoint_ns", "checkpoint_id", "parent_id", "task_id", "task_path"]
)
async def test_nul_in_an_id(saver, pg_dsn, before, where) -> None:
    bad = "a\x00b"
    with pytest.raises(InvalidIdError, match="NUL") as raised:
        if where == "thread_id":
            await put(saver, config(bad))
        elif where == "checkpoint_ns":
            await put(saver, config("t", checkpoint_ns=bad))
        elif where == "checkpoint_id":
            await put(saver, config("t"), cp_id=bad)
        elif where == "parent_id":
            await put(saver, config("t", checkpoint_id=bad))
        elif where == "task_id":
            await saver.aput_writes(valid_checkpoint_config(), [("x", 1)], bad)
        else:
            await saver.aput_writes(valid_checkpoint_config(), [("x", 1)], "task", bad)
    assert isinstance(raised.value, ValueError)
    await assert_untouched(saver, pg_dsn, before)


async def test_nul_in_a_channel_name(saver, pg_dsn, before) -> None:
    with pytest.raises(InvalidIdError, match="NUL"):
        await saver.aput_writes(valid_checkpoint_config(), [("ok", 1), ("x\x00", 2)], "task")
    await assert_untouched(saver, pg_dsn, before)


@pytest.mark.parametrize(
    "metadata",
    [{"bad\x00key": 1}, {"source": "lo\x00op"}, {"nested": {"list": ["ok", "b\x00d"]}}],
    ids=["key", "value", "nested"],
)
async def test_nul_in_metadata(saver, pg_dsn, before, metadata) -> None:
    with pytest.raises(InvalidMetadataError, match="NUL"):
        await put(saver, config("t"), metadata=metadata)
    await assert_untouched(saver, pg_dsn, before)


@pytest.mark.parametrize("where", ["thread_id", "checkpoint_ns", "checkpoint_id"])
async def test_overlong_id(saver, pg_dsn, before, where) -> None:
    long_id = "\u00e9" * 401  # 401 characters, 802 UTF-8 bytes: the limit counts bytes
    with pytest.raises(InvalidIdError, match="802 bytes long; the limit is 800"):
        if where == "thread_id":
            await put(saver, config(long_id))
        elif where == "checkpoint_ns":
            await put(saver, config("t", checkpoint_ns=long_id))
        else:
            await put(saver, config("t"), cp_id=long_id)
    await assert_untouched(saver, pg_dsn, before)


@pytest.mark.parametrize("operation", ["put", "put_writes"])
async def test_value_over_the_size_cap(saver, pg_dsn, before, operation) -> None:
    big = "x" * (LIMITS.max_value_bytes + 1)
    with pytest.raises(CheckpointTooLargeError, match="max_value_bytes") as raised:
        if operation == "put":
            await put(saver, config("t"), values={"small": "ok", "big": big})
        else:
            await saver.aput_writes(valid_checkpoint_config(), [("a", 1), ("b", big)], "task")
    assert isinstance(raised.value, ValueError)
    await assert_untouched(saver, pg_dsn, before)


@pytest.mark.parametrize("operation", ["put", "put_writes"])
async def test_value_the_serde_cannot_encode(saver, pg_dsn, before, operation) -> None:
    with pytest.raises(SerializationError, match="Unstorable") as raised:
        if operation == "put":
            await put(saver, config("t"), values={"ok": 1, "bad": Unstorable()})
        else:
            await saver.aput_writes(
                valid_checkpoint_config(), [("ok", 1), ("bad", Unstorable())], "task"
            )
    assert isinstance(raised.value, TypeError | ValueError)
    await assert_untouched(saver, pg_dsn, before)


@pytest.mark.parametrize(
    "filter",
    [
        {"source') OR 1=1 --": "input"},
        {"'; DELETE FROM dualsaver_checkpoints; --": 1},
        {"source": "input' OR '1'='1"},
        {"step": {"$ne": None}},
        {"source": "in\x00put"},
    ],
    ids=["key-or", "key-delete", "value-or", "operator", "nul"],
)
async def test_filter_crafted_as_sql_matches_nothing(saver, pg_dsn, before, filter) -> None:
    assert [t async for t in saver.alist(None, filter=filter)] == []
    assert [t async for t in saver.alist(config(OTHER), filter=filter)] == []
    assert await saver.athreads(filter=filter) == []
    # The same key, spelled plainly, does match: the filter really was applied.
    assert len([t async for t in saver.alist(None, filter={"source": "input"})]) == 1
    await assert_untouched(saver, pg_dsn, before)


async def test_thread_id_crafted_as_sql_reads_nothing(saver, pg_dsn, before) -> None:
    crafted = f"{OTHER}' OR '1'='1"
    assert await saver.aget_tuple(config(crafted)) is None
    assert [t async for t in saver.alist(config(crafted))] == []
    await saver.adelete_thread(crafted)
    await assert_untouched(saver, pg_dsn, before)
