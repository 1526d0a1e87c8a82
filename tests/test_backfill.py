"""A thread read back from PostgreSQL is put into Redis as PostgreSQL holds it: the same
bytes, task paths and order, nothing serialized again, and never beyond the limits."""

from __future__ import annotations

import logging
import operator
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from langgraph.checkpoint.base import writes_sort_key
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.compression import user_serde
from langgraph_dualsaver.hot import keys as K
from langgraph_dualsaver.records import Limits, StoredWrite, resolve_writes
from tests.helpers import config, put_chain


class CountingSerde(JsonPlusSerializer):
    """LangGraph's serializer, counting how many values it serialized."""

    def __init__(self) -> None:
        super().__init__()
        self.dumps = 0

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        self.dumps += 1
        return super().dumps_typed(obj)


@dataclass(frozen=True)
class Stored:
    """One checkpoint as a tier stores it: raw bytes only, nothing decoded by a serde."""

    checkpoint: bytes
    metadata: bytes
    parent_id: str | None
    blobs: dict[tuple[str, str], tuple[str, bytes | None]]
    writes: list[StoredWrite]


@pytest.fixture
async def saver(redis_url: str, pg_dsn: str, redis_prefix: str) -> AsyncIterator[DualSaver]:
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False, serde=CountingSerde()
    ) as opened:
        await opened.asetup()
        yield opened


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


class State(TypedDict):
    steps: Annotated[list[str], operator.add]


def failing_fan_out(saver: DualSaver) -> Any:
    """start -> a -> (b, c in parallel), where c fails: b's writes and c's error stay
    pending on the checkpoint after a, from two tasks with distinct task paths."""

    def fail(state: State) -> dict[str, Any]:
        raise ValueError("c failed")

    builder = StateGraph(State)
    builder.add_node("a", lambda state: {"steps": ["a"]})
    builder.add_node("b", lambda state: {"steps": ["b"]})
    builder.add_node("c", fail)
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("a", "c")
    builder.add_edge(["b", "c"], END)
    return builder.compile(checkpointer=saver)


async def in_postgres(dsn: str, thread_id: str) -> Stored:
    """The thread's latest checkpoint, straight from PostgreSQL's columns."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT checkpoint_id, parent_checkpoint_id, checkpoint, metadata::text AS metadata "
            "FROM dualsaver_checkpoints WHERE thread_id = $1 AND checkpoint_ns = '' "
            "ORDER BY checkpoint_id DESC LIMIT 1",
            thread_id,
        )
        blobs = await conn.fetch(
            "SELECT b.channel, b.version, b.type, b.blob FROM dualsaver_checkpoints AS c "
            "CROSS JOIN jsonb_each_text(c.channel_versions) AS v JOIN dualsaver_blobs AS b "
            "ON (b.thread_id, b.checkpoint_ns, b.channel, b.version) = "
            "(c.thread_id, c.checkpoint_ns, v.key, v.value) "
            "WHERE c.thread_id = $1 AND c.checkpoint_ns = '' AND c.checkpoint_id = $2",
            thread_id,
            row["checkpoint_id"],
        )
        writes = await conn.fetch(
            "SELECT task_id, task_path, idx, channel, type, blob FROM dualsaver_writes "
            "WHERE thread_id = $1 AND checkpoint_ns = '' AND checkpoint_id = $2",
            thread_id,
            row["checkpoint_id"],
        )
    finally:
        await conn.close()
    return Stored(
        checkpoint=row["checkpoint"],
        metadata=row["metadata"].encode("utf-8"),
        parent_id=row["parent_checkpoint_id"],
        blobs={(b["channel"], b["version"]): (b["type"], b["blob"]) for b in blobs},
        writes=sorted(
            (StoredWrite(*w) for w in writes),
            key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx),
        ),
    )


async def in_redis(raw: aioredis.Redis, saver: DualSaver, thread_id: str) -> Stored:
    """The thread's latest checkpoint, straight from its Redis keys."""
    tk = saver.hot.thread_keys(thread_id)
    (field,) = await raw.zrange(tk.idx, *K.latest_range(""), desc=True, bylex=True, offset=0, num=1)
    entry = K.decode_stored_checkpoint(await raw.hget(tk.cp, field))
    blobs = {
        K.split_blob_field(f)[1:]: K.decode_blob(v)
        for f, v in (await raw.hgetall(tk.blobs)).items()
    }
    return Stored(
        checkpoint=entry.checkpoint,
        metadata=entry.metadata,
        parent_id=entry.parent_id,
        blobs=blobs,  # type: ignore[arg-type]
        writes=resolve_writes(
            K.decode_write_members(
                field, await raw.zrange(tk.writes, *K.writes_range(field), bylex=True)
            )
        ),
    )


async def evict_when_durable(saver: DualSaver, raw: aioredis.Redis, thread_id: str) -> None:
    await saver.aflush()
    await saver.hot.aevict_thread(thread_id)
    assert await raw.exists(*saver.hot.thread_keys(thread_id).data) == 0


async def test_backfill_stores_postgres_bytes_unchanged_and_serializes_nothing(
    saver: DualSaver, raw: aioredis.Redis, pg_dsn: str
) -> None:
    thread = config(f"fan-{uuid.uuid4()}")
    with pytest.raises(ValueError, match="c failed"):
        await failing_fan_out(saver).ainvoke({"steps": []}, thread)
    await evict_when_durable(saver, raw, thread["configurable"]["thread_id"])
    durable = await in_postgres(pg_dsn, thread["configurable"]["thread_id"])
    assert len({w.task_path for w in durable.writes}) == 2  # b's writes and c's error
    serde: CountingSerde = user_serde(saver.serde)  # type: ignore[assignment]
    dumps_before = serde.dumps

    cold = await saver.aget_tuple(thread)

    assert serde.dumps == dumps_before
    assert await in_redis(raw, saver, thread["configurable"]["thread_id"]) == durable
    hot = await saver.hot.aget_tuple(thread)
    assert hot == cold == await saver.durable.aget_tuple(thread)


async def test_pending_writes_keep_task_paths_and_order_in_both_tiers(
    saver: DualSaver, raw: aioredis.Redis, pg_dsn: str
) -> None:
    thread_id = f"paths-{uuid.uuid4()}"
    (head,) = await put_chain(saver, thread_id, 1)
    for task_id, task_path in (("a-task", "~2"), ("b-task", "~1")):  # path order != id order
        await saver.aput_writes(head, [("x", task_id), ("y", task_path)], task_id, task_path)
    await evict_when_durable(saver, raw, thread_id)

    cold = await saver.aget_tuple(config(thread_id))

    hot_stored = await in_redis(raw, saver, thread_id)
    assert hot_stored == await in_postgres(pg_dsn, thread_id)
    assert [(w.task_id, w.task_path) for w in hot_stored.writes] == [
        ("b-task", "~1"), ("b-task", "~1"), ("a-task", "~2"), ("a-task", "~2"),
    ]  # fmt: skip
    hot = await saver.hot.aget_tuple(config(thread_id))
    durable = await saver.durable.aget_tuple(config(thread_id))
    assert cold is not None and hot is not None and durable is not None
    assert hot.pending_writes == durable.pending_writes == cold.pending_writes
    assert [w[0] for w in hot.pending_writes] == ["b-task", "b-task", "a-task", "a-task"]


async def write_big_value(saver: DualSaver, thread_id: str) -> None:
    (head,) = await put_chain(saver, thread_id, 1)
    await saver.aput_writes(head, [("x", "v" * 1000)], "task")


async def write_long_task_id(saver: DualSaver, thread_id: str) -> None:
    (head,) = await put_chain(saver, thread_id, 1)
    await saver.aput_writes(head, [("x", "v")], "t" * 100)


@pytest.mark.parametrize(
    ("write", "limits"),
    [
        (write_big_value, Limits(max_value_bytes=500)),
        (write_long_task_id, Limits(max_id_bytes=64)),
    ],
    ids=["value-size", "id-length"],
)
async def test_a_checkpoint_beyond_the_limits_is_returned_but_not_backfilled(
    write: Any,
    limits: Limits,
    saver: DualSaver,
    raw: aioredis.Redis,
    redis_url: str,
    pg_dsn: str,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    thread_id = f"limits-{uuid.uuid4()}"
    await write(saver, thread_id)  # under the default limits, as an older database was
    await evict_when_durable(saver, raw, thread_id)
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False, limits=limits
    ) as strict:
        before = await strict.astats()
        with caplog.at_level(logging.WARNING, logger="langgraph_dualsaver.chain.saver"):
            found = await strict.aget_tuple(config(thread_id))
        after = await strict.astats()

        assert found is not None and found == await saver.durable.aget_tuple(config(thread_id))
        assert await raw.exists(*strict.hot.thread_keys(thread_id).data) == 0
        assert after.backfills_skipped == before.backfills_skipped + 1
        assert after.backfills == before.backfills
        assert any("not putting" in r.getMessage() for r in caplog.records)
