"""Stored values are decoded strictly by default: a value crafted straight into Redis or
PostgreSQL that names code to run is refused with ``UnsafeValueError`` and runs nothing,
in every saver and for channel values and pending writes alike; a type the user allows
(``with_allowlist`` or their own ``serde=``) still reads."""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import ormsgpack
import pytest
import redis.asyncio as aioredis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import (
    EXT_CONSTRUCTOR_SINGLE_ARG,
    EXT_METHOD_SINGLE_ARG,
    JsonPlusSerializer,
)

from langgraph_dualsaver import DualSaver, RedisHotSaver, StrictSerializer, UnsafeValueError
from langgraph_dualsaver.hot import keys as K
from tests.factories import SAVER_KINDS, open_saver
from tests.helpers import checkpoint, config

CALLS: list[Any] = []


def crafted_payload_ran(arg: Any) -> None:
    """What the crafted values name: a decoder that imports and calls it appends here."""
    CALLS.append(arg)


CRAFTED_NAME = f"{__name__}.crafted_payload_ran"


def crafted(module: str = __name__, name: str = "crafted_payload_ran", arg: Any = "ran") -> bytes:
    """msgpack that LangGraph's permissive decoder turns into ``module.name(arg)``."""
    header = ormsgpack.packb((module, name, arg))
    return ormsgpack.packb(ormsgpack.Ext(EXT_CONSTRUCTOR_SINGLE_ARG, header))


@dataclass
class Invoice:
    """A user type: outside LangGraph's safe list, so it reads only once allowed."""

    amount: float


ALLOW_INVOICE = [(__name__, "Invoice")]

# (saver kind, tier the crafted value is written to): every kind, and both tiers of the chain.
TAMPERED = [
    ("postgres", "postgres"),
    ("redis", "redis"),
    ("dual_write_behind", "redis"),
    ("dual_write_behind", "postgres"),
    ("dual_write_through", "redis"),
    ("dual_write_through", "postgres"),
]


@pytest.fixture(autouse=True)
def no_calls_yet() -> Iterator[None]:
    CALLS.clear()
    yield
    CALLS.clear()


@asynccontextmanager
async def saver_of(
    kind: str, redis_url: str, pg_dsn: str, prefix: str, **options: Any
) -> AsyncIterator[BaseCheckpointSaver]:
    """``open_saver``, with the chain's flusher run only by the test (``aflush``)."""
    if kind.startswith("dual_"):
        options["background_flush"] = False
    async with open_saver(
        kind, redis_url=redis_url, pg_dsn=pg_dsn, prefix=prefix, **options
    ) as saver:
        yield saver


async def put_thread(saver: BaseCheckpointSaver, thread_id: str, value: Any) -> RunnableConfig:
    """A checkpoint with ``value`` in channel ``x`` and one pending write of ``value``,
    in every tier the saver has."""
    saved = await saver.aput(config(thread_id), checkpoint(value, 1), {"step": 0}, {"x": 1})
    await saver.aput_writes(saved, [("x", value)], "task-1")
    if isinstance(saver, DualSaver):
        await saver.aflush()
    return config(thread_id)


# -- writing crafted bytes straight into a tier ---------------------------------------


def hot_of(saver: BaseCheckpointSaver) -> RedisHotSaver:
    return saver.hot if isinstance(saver, DualSaver) else saver  # type: ignore[return-value]


async def craft_in_redis(
    saver: BaseCheckpointSaver, redis_url: str, thread_id: str, what: str, data: bytes
) -> None:
    """Replace the thread's stored channel values (``what="values"``) or pending writes
    (``"writes"``) in Redis with ``data``, as anyone who can write to Redis could."""
    hot = hot_of(saver)
    keys = K.thread_keys(hot.prefix, hot.shards, thread_id)
    client = aioredis.Redis.from_url(redis_url)
    try:
        if what == "values":
            for field in await client.hkeys(keys.blobs):
                await client.hset(keys.blobs, field, ormsgpack.packb(["msgpack", data]))
        else:
            for member in await client.zrange(keys.writes, 0, -1):
                field, write = K.split_write_member(member)
                forged = K.write_member(field, replace(write, type="msgpack", data=data))
                await client.zrem(keys.writes, member)
                await client.zadd(keys.writes, {forged: 0})
    finally:
        await client.aclose()


async def craft_in_postgres(pg_dsn: str, thread_id: str, what: str, data: bytes) -> None:
    """The same in PostgreSQL, through the ``type`` and ``blob`` columns."""
    table = "dualsaver_blobs" if what == "values" else "dualsaver_writes"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            f"UPDATE {table} SET type = 'msgpack', blob = $2 WHERE thread_id = $1",
            thread_id,
            data,
        )
    finally:
        await conn.close()


async def evict_from_redis(saver: BaseCheckpointSaver, redis_url: str, thread_id: str) -> None:
    """Drop the thread's Redis keys, as its TTL would, so the chain reads PostgreSQL."""
    hot = hot_of(saver)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.delete(*K.thread_keys(hot.prefix, hot.shards, thread_id).data)
    finally:
        await client.aclose()


async def craft(
    saver: BaseCheckpointSaver, tier: str, urls: tuple[str, str], thread_id: str, what: str,
    data: bytes,
) -> None:  # fmt: skip
    redis_url, pg_dsn = urls
    if tier == "redis":
        await craft_in_redis(saver, redis_url, thread_id, what, data)
    else:
        await craft_in_postgres(pg_dsn, thread_id, what, data)
        if isinstance(saver, DualSaver):
            await evict_from_redis(saver, redis_url, thread_id)


# -- a crafted value is refused, in every saver and tier ------------------------------


@pytest.mark.parametrize("what", ["values", "writes"])
@pytest.mark.parametrize(("kind", "tier"), TAMPERED)
async def test_a_crafted_value_is_refused_and_runs_nothing(
    kind: str, tier: str, what: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread_id = f"crafted-{uuid.uuid4()}"
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix) as saver:
        cfg = await put_thread(saver, thread_id, "benign")
        await craft(saver, tier, (redis_url, pg_dsn), thread_id, what, crafted())

        with pytest.raises(UnsafeValueError, match=CRAFTED_NAME) as refused:
            await saver.aget_tuple(cfg)
        with pytest.raises(UnsafeValueError):
            [item async for item in saver.alist(cfg)]

    assert CALLS == []
    assert isinstance(refused.value, ValueError)
    assert f"with_allowlist([({__name__!r}, 'crafted_payload_ran')])" in str(refused.value)


@pytest.mark.parametrize("tier", ["redis", "postgres"])
async def test_the_reviewed_os_system_payload_runs_nothing(
    tier: str, tmp_path: Path, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    marker = tmp_path / "ran"
    payload = crafted("os", "system", f"touch {marker}")
    thread_id = f"os-system-{uuid.uuid4()}"
    async with saver_of(tier, redis_url, pg_dsn, redis_prefix) as saver:
        cfg = await put_thread(saver, thread_id, "benign")
        await craft(saver, tier, (redis_url, pg_dsn), thread_id, "values", payload)

        with pytest.raises(UnsafeValueError, match=r"os\.system"):
            await saver.aget_tuple(cfg)

    assert not marker.exists()


@pytest.mark.parametrize("tier", ["redis", "postgres"])
async def test_a_permissive_serde_the_user_passes_is_used_as_given(
    tier: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    """The opt-out, and the proof that the crafted bytes above are live: LangGraph's
    permissive serializer, passed as ``serde=``, runs what they name."""
    permissive = JsonPlusSerializer(allowed_msgpack_modules=True)
    thread_id = f"permissive-{uuid.uuid4()}"
    async with saver_of(tier, redis_url, pg_dsn, redis_prefix, serde=permissive) as saver:
        cfg = await put_thread(saver, thread_id, "benign")
        await craft(saver, tier, (redis_url, pg_dsn), thread_id, "values", crafted())
        await saver.aget_tuple(cfg)

    assert CALLS == ["ran"]


# -- the serializer alone: nesting, pickle, legacy JSON -------------------------------


@pytest.mark.pure
def test_a_crafted_type_nested_inside_an_allowed_one_is_refused() -> None:
    inner = ormsgpack.Ext(
        EXT_CONSTRUCTOR_SINGLE_ARG, ormsgpack.packb((__name__, "crafted_payload_ran", "x"))
    )
    outer = ormsgpack.packb(("collections", "deque", [inner]))
    data = ormsgpack.packb({"items": [ormsgpack.Ext(EXT_CONSTRUCTOR_SINGLE_ARG, outer)]})

    with pytest.raises(UnsafeValueError, match=CRAFTED_NAME):
        StrictSerializer().loads_typed(("msgpack", data))
    assert CALLS == []


class CraftedTarget:
    @staticmethod
    def run(arg: Any) -> None:
        crafted_payload_ran(arg)


@pytest.mark.pure
def test_a_crafted_method_call_is_refused_and_no_allowlist_enables_it() -> None:
    header = ormsgpack.packb((__name__, "CraftedTarget", "x", "run"))
    data = ormsgpack.packb(ormsgpack.Ext(EXT_METHOD_SINGLE_ARG, header))
    serde = StrictSerializer().with_msgpack_allowlist([(__name__, "CraftedTarget")])

    with pytest.raises(UnsafeValueError, match=r"CraftedTarget\.run.*cannot be allowed"):
        serde.loads_typed(("msgpack", data))
    assert CALLS == []


class _CallsOnUnpickle:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return crafted_payload_ran, ("unpickled",)


@pytest.mark.pure
def test_a_crafted_pickle_value_is_refused() -> None:
    data = pickle.dumps(_CallsOnUnpickle())

    with pytest.raises(UnsafeValueError, match="pickle"):
        StrictSerializer().loads_typed(("pickle", data))
    assert CALLS == []


@pytest.mark.pure
def test_a_crafted_json_constructor_runs_nothing() -> None:
    """Legacy JSON values follow LangGraph's own rules: a constructor outside its safe
    types comes back as the plain envelope, never imported."""
    envelope = {"lc": 2, "type": "constructor", "id": [__name__, "crafted_payload_ran"]}

    value = StrictSerializer().loads_typed(("json", json.dumps(envelope).encode()))

    assert value == envelope
    assert CALLS == []


@pytest.mark.pure
def test_langgraph_and_langchain_core_types_read_without_an_allowlist() -> None:
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.types import Command, Interrupt, Send

    serde = StrictSerializer()
    values = [
        HumanMessage("hi", id="1"),
        AIMessage("hello", id="2"),
        Send("node", {"x": 1}),
        Interrupt(value={"question": "ok?"}, id="i"),
        {"nested": {1, 2}},
    ]
    command = Command(resume="yes")  # no __eq__ survives a round trip: compare its repr

    assert [serde.loads_typed(serde.dumps_typed(v)) for v in values] == values
    assert repr(serde.loads_typed(serde.dumps_typed(command))) == repr(command)


# -- a type the user allows reads ------------------------------------------------------


class ReversingCipher:
    """No protection at all: it only gives ``EncryptedSerializer`` something to wrap with."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        return "rev", plaintext[::-1]

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        return ciphertext[::-1]


@pytest.mark.pure
def test_a_strict_serializer_inside_an_encrypted_one_refuses_and_takes_the_allowlist() -> None:
    """``EncryptedSerializer`` accepts values stored unencrypted; the strict one inside it
    still refuses them, and ``with_allowlist`` reaches through the wrapper."""
    serde = EncryptedSerializer(ReversingCipher(), StrictSerializer())
    saver = RedisHotSaver(url="redis://127.0.0.1:1/0", serde=serde)  # never connects
    stored = saver.serde.dumps_typed(Invoice(650.0))

    with pytest.raises(UnsafeValueError, match=CRAFTED_NAME):
        saver.serde.loads_typed(("msgpack", crafted()))
    with pytest.raises(UnsafeValueError, match="Invoice"):
        saver.serde.loads_typed(stored)
    assert saver.with_allowlist(ALLOW_INVOICE).serde.loads_typed(stored) == Invoice(650.0)
    assert CALLS == []


async def assert_reads_invoice(saver: BaseCheckpointSaver, cfg: RunnableConfig) -> None:
    found = await saver.aget_tuple(cfg)
    assert found is not None
    assert found.checkpoint["channel_values"]["x"] == Invoice(650.0)
    assert [w[2] for w in found.pending_writes] == [Invoice(650.0)]


@pytest.mark.parametrize("kind", SAVER_KINDS)
async def test_a_type_allowed_with_with_allowlist_reads(
    kind: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread_id = f"allowlist-{uuid.uuid4()}"
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix) as saver:
        cfg = await put_thread(saver, thread_id, Invoice(650.0))
        with pytest.raises(UnsafeValueError, match=rf"{__name__}\.Invoice"):
            await saver.aget_tuple(cfg)

        allowed = saver.with_allowlist(ALLOW_INVOICE)

        assert allowed is not saver
        await assert_reads_invoice(allowed, cfg)
        if isinstance(allowed, DualSaver):  # the allowlist reaches both inner savers
            await assert_reads_invoice(allowed.hot, cfg)
            await assert_reads_invoice(allowed.durable, cfg)


@pytest.mark.parametrize("kind", SAVER_KINDS)
async def test_a_type_allowed_by_the_users_serde_reads(
    kind: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    serde: SerializerProtocol = StrictSerializer(allowed_msgpack_modules=ALLOW_INVOICE)
    thread_id = f"serde-{uuid.uuid4()}"
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, serde=serde) as saver:
        cfg = await put_thread(saver, thread_id, Invoice(650.0))
        await assert_reads_invoice(saver, cfg)
        if isinstance(saver, DualSaver):
            await assert_reads_invoice(saver.durable, cfg)
