"""Bad input: a specific error naming what was wrong, nothing written, no other thread
touched. Each test compares every key under the test's prefix (and its exact content)
before and after the call."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

from langgraph_dualsaver.errors import (
    CheckpointTooLargeError,
    ConfigurationError,
    DualSaverError,
    InvalidIdError,
    InvalidInputError,
    InvalidMetadataError,
    MissingThreadIdError,
    SerializationError,
)
from langgraph_dualsaver.records import Limits
from langgraph_dualsaver.redis import RedisHotSaver
from tests.refusing_serde import RefusingSerde, Unstorable

LIMITS = Limits(max_id_bytes=800, max_value_bytes=4096)
OTHER = "other-thread"


@pytest.fixture
def raw(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def stored(raw: Any, prefix: str) -> dict[bytes, bytes]:
    """Every key under the prefix with its exact serialized content (test-side scan)."""
    return {key: raw.dump(key) for key in raw.scan_iter(match=f"{prefix}:*")}


@pytest.fixture
async def saver(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisHotSaver]:
    """A set-up saver holding one other thread (a checkpoint and a pending write)."""
    async with RedisHotSaver.from_conn_string(
        redis_url, prefix=redis_prefix, limits=LIMITS, serde=RefusingSerde(), outbox=True
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
async def before(saver: RedisHotSaver, raw: Any, redis_prefix: str) -> dict[bytes, bytes]:
    state = stored(raw, redis_prefix)
    assert len(state) == 7  # the thread's 5 keys, its shard's outbox, the registry
    return state


def config(thread_id: Any = None, **configurable: Any) -> dict[str, Any]:
    if thread_id is not None:
        configurable["thread_id"] = thread_id
    return {"configurable": {"checkpoint_ns": "", **configurable}}


async def assert_untouched(saver: RedisHotSaver, raw: Any, prefix: str, before: dict) -> None:
    assert stored(raw, prefix) == before
    other = await saver.aget_tuple(config(OTHER))
    assert other is not None
    assert other.checkpoint["channel_values"] == {"x": "kept"}
    assert [w[2] for w in other.pending_writes] == ["pending"]


async def put(saver: RedisHotSaver, cfg: dict, *, values=None, metadata=None, cp_id=None):
    values = {"x": "v"} if values is None else values
    cp = generate_checkpoint(channel_values=values, channel_versions=dict.fromkeys(values, 1))
    if cp_id is not None:
        cp["id"] = cp_id
    return await saver.aput(cfg, cp, metadata or {"source": "loop"}, dict.fromkeys(values, 1))


def valid_checkpoint_config() -> dict[str, Any]:
    return config(f"t-{uuid.uuid4()}", checkpoint_id="1ef00000-0000-6000-8000-000000000000")


@pytest.mark.parametrize("operation", ["put", "put_writes", "get_tuple"])
async def test_missing_thread_id(saver, raw, redis_prefix, before, operation) -> None:
    with pytest.raises(MissingThreadIdError, match=r"thread_id.* is missing") as raised:
        if operation == "put":
            await put(saver, config())
        elif operation == "put_writes":
            await saver.aput_writes(config(checkpoint_id="c1"), [("x", 1)], "task")
        else:
            await saver.aget_tuple(config())
    assert isinstance(raised.value, KeyError | ValueError)
    assert isinstance(raised.value, DualSaverError)
    await assert_untouched(saver, raw, redis_prefix, before)


@pytest.mark.parametrize("operation", ["put", "put_writes", "delete_thread"])
async def test_empty_thread_id(saver, raw, redis_prefix, before, operation) -> None:
    with pytest.raises(MissingThreadIdError, match=r"thread_id.* is empty"):
        if operation == "put":
            await put(saver, config(""))
        elif operation == "put_writes":
            await saver.aput_writes(config("", checkpoint_id="c1"), [("x", 1)], "task")
        else:
            await saver.adelete_thread("")
    await assert_untouched(saver, raw, redis_prefix, before)


@pytest.mark.parametrize(
    "where", ["thread_id", "checkpoint_ns", "checkpoint_id", "parent_id", "task_id", "task_path"]
)
async def test_nul_in_an_id(saver, raw, redis_prefix, before, where) -> None:
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
    await assert_untouched(saver, raw, redis_prefix, before)


async def test_nul_in_a_channel_name(saver, raw, redis_prefix, before) -> None:
    with pytest.raises(InvalidIdError, match="NUL"):
        await saver.aput_writes(valid_checkpoint_config(), [("ok", 1), ("x\x00", 2)], "task")
    await assert_untouched(saver, raw, redis_prefix, before)


@pytest.mark.parametrize(
    "metadata",
    [{"bad\x00key": 1}, {"source": "lo\x00op"}, {"nested": {"list": ["ok", "b\x00d"]}}],
    ids=["key", "value", "nested"],
)
async def test_nul_in_metadata(saver, raw, redis_prefix, before, metadata) -> None:
    with pytest.raises(InvalidMetadataError, match="NUL"):
        await put(saver, config("t"), metadata=metadata)
    await assert_untouched(saver, raw, redis_prefix, before)


@pytest.mark.parametrize("where", ["thread_id", "checkpoint_ns", "checkpoint_id"])
async def test_overlong_id(saver, raw, redis_prefix, before, where) -> None:
    long_id = "\u00e9" * 401  # 401 characters, 802 UTF-8 bytes: the limit counts bytes
    with pytest.raises(InvalidIdError, match="802 bytes long; the limit is 800"):
        if where == "thread_id":
            await put(saver, config(long_id))
        elif where == "checkpoint_ns":
            await put(saver, config("t", checkpoint_ns=long_id))
        else:
            await put(saver, config("t"), cp_id=long_id)
    await assert_untouched(saver, raw, redis_prefix, before)


@pytest.mark.parametrize("operation", ["put", "put_writes"])
async def test_value_over_the_size_cap(saver, raw, redis_prefix, before, operation) -> None:
    big = "x" * (LIMITS.max_value_bytes + 1)
    with pytest.raises(CheckpointTooLargeError, match="max_value_bytes") as raised:
        if operation == "put":
            await put(saver, config("t"), values={"small": "ok", "big": big})
        else:
            await saver.aput_writes(valid_checkpoint_config(), [("a", 1), ("b", big)], "task")
    assert isinstance(raised.value, ValueError)
    await assert_untouched(saver, raw, redis_prefix, before)


@pytest.mark.parametrize("operation", ["put", "put_writes"])
async def test_value_the_serde_cannot_encode(saver, raw, redis_prefix, before, operation) -> None:
    with pytest.raises(SerializationError, match="Unstorable") as raised:
        if operation == "put":
            await put(saver, config("t"), values={"ok": 1, "bad": Unstorable()})
        else:
            await saver.aput_writes(
                valid_checkpoint_config(), [("ok", 1), ("bad", Unstorable())], "task"
            )
    assert isinstance(raised.value, TypeError | ValueError)
    await assert_untouched(saver, raw, redis_prefix, before)


async def test_an_unknown_prune_strategy(saver, raw, redis_prefix, before) -> None:
    with pytest.raises(InvalidInputError, match="unknown prune strategy 'everything'"):
        await saver.aprune([OTHER], strategy="everything")
    with pytest.raises(TypeError, match="not a str"):
        await saver.aprune(OTHER)  # type: ignore[arg-type]
    await assert_untouched(saver, raw, redis_prefix, before)


@pytest.mark.parametrize(
    "filter",
    [{"*": "input"}, {"source": "*"}, {"source": "inpu?"}, {"source": "[a-z]*"}],
    ids=["key-star", "value-star", "value-question", "value-class"],
)
async def test_filter_crafted_as_a_pattern_matches_nothing(
    saver, raw, redis_prefix, before, filter
) -> None:
    assert [t async for t in saver.alist(None, filter=filter)] == []
    assert [t async for t in saver.alist(config(OTHER), filter=filter)] == []
    # The same key, spelled plainly, does match: the filter really was applied.
    assert len([t async for t in saver.alist(None, filter={"source": "input"})]) == 1
    await assert_untouched(saver, raw, redis_prefix, before)


@pytest.mark.parametrize("thread_id", ["*", "other-*", "other-threa?", "[o]ther-thread"])
async def test_thread_id_crafted_as_a_pattern_reads_nothing(
    saver, raw, redis_prefix, before, thread_id
) -> None:
    assert await saver.aget_tuple(config(thread_id)) is None
    assert [t async for t in saver.alist(config(thread_id))] == []
    await saver.adelete_thread(thread_id)
    before = {k: v for k, v in before.items() if not k.endswith(b":outbox")}
    after = {k: v for k, v in stored(raw, redis_prefix).items() if not k.endswith(b":outbox")}
    assert after == before  # only a tombstone was queued, for the thread that was named
    await assert_untouched_other(saver)


async def assert_untouched_other(saver: RedisHotSaver) -> None:
    other = await saver.aget_tuple(config(OTHER))
    assert other is not None and other.checkpoint["channel_values"] == {"x": "kept"}


@pytest.mark.parametrize(
    "options",
    [
        {"prefix": "a{b"},
        {"ttl": 60},
        {"ttl": timedelta(0)},
        {"shards": 0},
        {"shards": True},
    ],
    ids=["prefix-brace", "ttl-int", "ttl-zero", "shards-zero", "shards-bool"],
)
def test_bad_options_are_refused_before_connecting(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisHotSaver(url="redis://127.0.0.1:1/0", **options)


def test_a_client_and_a_url_at_once_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="exactly one"):
        RedisHotSaver(redis.asyncio.Redis(), url="redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisHotSaver(redis.asyncio.Redis(decode_responses=True))
