"""Bad input through DualSaver: the specific error, and nothing written anywhere: every
Redis key under the prefix and every PostgreSQL row exactly as before, in both modes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
import redis

from langgraph_dualsaver import (
    CheckpointTooLargeError,
    DualSaver,
    DualSaverError,
    InvalidIdError,
    InvalidMetadataError,
    Limits,
    MissingThreadIdError,
    SerializationError,
)
from tests.dual_helpers import checkpoint, config, put_chain
from tests.refusing_serde import RefusingSerde, Unstorable

TABLES = ("dualsaver_checkpoints", "dualsaver_blobs", "dualsaver_writes", "dualsaver_tombstones")


@pytest.fixture(params=["write_behind", "write_through"])
async def saver(
    request: pytest.FixtureRequest, redis_url: str, pg_dsn: str, redis_prefix: str
) -> AsyncIterator[DualSaver]:
    """A saver holding one other thread, flushed, with nothing in flight."""
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, mode=request.param, serde=RefusingSerde(),
        limits=Limits(max_value_bytes=4096), background_flush=False,
    ) as opened:  # fmt: skip
        await opened.asetup()
        [saved] = await put_chain(opened, "other", 1)
        await opened.aput_writes(saved, [("x", "pending")], "task-1", "~__pregel_pull, n")
        await opened.aflush()
        yield opened


async def everything(redis_url: str, pg_dsn: str, prefix: str) -> tuple[dict, dict]:
    """Every key under the prefix (exact bytes) and every row of every table."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = {key: client.dump(key) for key in client.scan_iter(match=f"{prefix}:*")}
    finally:
        client.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = {t: sorted(map(tuple, await conn.fetch(f"SELECT * FROM {t}"))) for t in TABLES}
    finally:
        await conn.close()
    return keys, rows


def _big() -> dict:
    return {"x": "y" * 5000}


BAD_PUTS: dict[str, tuple[Callable[[], tuple[dict, dict, dict]], type[DualSaverError]]] = {
    "missing thread_id": (lambda: ({"configurable": {}}, {"x": 1}, {}), MissingThreadIdError),
    "empty thread_id": (lambda: (config(""), {"x": 1}, {}), MissingThreadIdError),
    "NUL in thread_id": (lambda: (config("a\x00b"), {"x": 1}, {}), InvalidIdError),
    "NUL in namespace": (lambda: (config("t", ns="n\x00s"), {"x": 1}, {}), InvalidIdError),
    "over-long thread_id": (lambda: (config("t" * 801), {"x": 1}, {}), InvalidIdError),
    "NUL in metadata": (lambda: (config("t"), {"x": 1}, {"k": "v\x00"}), InvalidMetadataError),
    "value over the cap": (lambda: (config("t"), _big(), {}), CheckpointTooLargeError),
    "unserializable value": (lambda: (config("t"), {"x": Unstorable()}, {}), SerializationError),
    "lone surrogate in thread_id": (lambda: (config("a\ud800b"), {"x": 1}, {}), InvalidIdError),
    "lone surrogate in namespace": (
        lambda: (config("t", ns="\udc80"), {"x": 1}, {}), InvalidIdError
    ),
    "lone surrogate in metadata": (
        lambda: (config("t"), {"x": 1}, {"k": "v\udfff"}), InvalidMetadataError
    ),
    "metadata over the cap": (
        lambda: (config("t"), {"x": 1}, {"k": "y" * 5000}), CheckpointTooLargeError
    ),
    "channel and ids over one index entry": (
        lambda: (config("t" * 800, ns="n" * 800), {"c" * 800: 1}, {}), InvalidIdError
    ),
}


@pytest.mark.parametrize("case", list(BAD_PUTS))
async def test_a_bad_put_raises_and_writes_nothing_anywhere(
    case: str, saver: DualSaver, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    make, error = BAD_PUTS[case]
    cfg, values, metadata = make()
    before = await everything(redis_url, pg_dsn, redis_prefix)
    ckpt = checkpoint(next(iter(values.values())), 1)
    ckpt["channel_values"] = values
    with pytest.raises(error) as raised:
        await saver.aput(cfg, ckpt, {"source": "loop", **metadata}, dict.fromkeys(values, 1))
    assert isinstance(raised.value, ValueError)
    assert await everything(redis_url, pg_dsn, redis_prefix) == before
    other = await saver.aget_tuple(config("other"))
    assert [w[2] for w in other.pending_writes] == ["pending"]


async def test_a_bad_write_raises_and_writes_nothing_anywhere(
    saver: DualSaver, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    latest = (await saver.aget_tuple(config("other"))).config
    before = await everything(redis_url, pg_dsn, redis_prefix)
    with pytest.raises(SerializationError, match="'w'"):
        await saver.aput_writes(latest, [("ok", 1), ("w", Unstorable())], "task-2")
    with pytest.raises(InvalidIdError, match="checkpoint_id"):
        await saver.aput_writes(config("other"), [("ok", 1)], "task-2")
    assert await everything(redis_url, pg_dsn, redis_prefix) == before


async def test_writes_whose_ids_overflow_one_index_entry_are_refused_before_any_io(
    saver: DualSaver, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread, ns = "t" * 790, "n" * 790
    [parent] = await put_chain(saver, thread, 1, start=config(thread, ns=ns))
    await saver.aflush()
    before = await everything(redis_url, pg_dsn, redis_prefix)
    with pytest.raises(InvalidIdError, match=r"max_key_bytes"):
        await saver.aput_writes(parent, [("x", 1)], "k" * 800)  # four ids: 2,416 bytes
    assert await everything(redis_url, pg_dsn, redis_prefix) == before


SURROGATE = "a\udc80"
"""A lone surrogate: valid in a Python ``str``, not storable as text by either store."""


async def test_every_method_refuses_a_lone_surrogate_in_a_thread_id_before_any_io(
    saver: DualSaver, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    before = await everything(redis_url, pg_dsn, redis_prefix)
    calls = {
        "get_tuple": lambda: saver.aget_tuple(config(SURROGATE)),
        "list": lambda: anext(saver.alist(config(SURROGATE)), None),
        "put_writes": lambda: saver.aput_writes(config(SURROGATE, "x"), [("x", 1)], "task"),
        "delete_thread": lambda: saver.adelete_thread(SURROGATE),
        "copy_thread from": lambda: saver.acopy_thread(SURROGATE, "other-copy"),
        "copy_thread to": lambda: saver.acopy_thread("other", SURROGATE),
        "prune": lambda: saver.aprune([SURROGATE]),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidIdError, match="lone surrogate"):
            await call()
        assert await everything(redis_url, pg_dsn, redis_prefix) == before, name
    assert await saver.aflush() == 0  # nothing was queued: the queue still flows


async def test_a_filter_crafted_as_sql_or_a_pattern_matches_nothing(saver: DualSaver) -> None:
    for crafted in ({"source') OR 1=1 --": "x"}, {"*": "*"}, {"source": "*"}):
        assert [t async for t in saver.alist(None, filter=crafted)] == []
    assert [t async for t in saver.alist(config("*"))] == []
    assert len([t async for t in saver.alist(config("other"))]) == 1


def test_bad_input_from_the_sync_api_too(redis_url: str, pg_dsn: str, redis_prefix: str) -> None:
    with DualSaver.from_conn_string(redis_url, pg_dsn, prefix=redis_prefix) as saver:
        saver.setup()
        with pytest.raises(MissingThreadIdError):
            saver.get_tuple({"configurable": {}})
        before = asyncio.run(everything(redis_url, pg_dsn, redis_prefix))
        with pytest.raises(InvalidIdError):
            saver.put(config("a\x00"), checkpoint(1, 1), {}, {"x": 1})
        assert asyncio.run(everything(redis_url, pg_dsn, redis_prefix)) == before
