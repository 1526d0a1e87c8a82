"""Channel values and pending writes over ``Compression.min_bytes`` are stored zstd-
compressed in both tiers and read back; what was stored either way reads whatever the
setting is now; an ``EncryptedSerializer`` gets compressed plaintext; a stored value that
inflates past ``Limits.max_value_bytes`` is refused without inflating it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from dataclasses import replace
from typing import Any

import asyncpg
import ormsgpack
import pytest
import redis.asyncio as aioredis
import zstandard
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

from langgraph_dualsaver import (
    CheckpointTooLargeError,
    Compression,
    ConfigurationError,
    DualSaver,
    Limits,
    RedisHotSaver,
    StoredValueError,
    StoredValueTooLargeError,
    StrictSerializer,
)
from langgraph_dualsaver.cli.compression import compression_sample, describe, summarize
from langgraph_dualsaver.compression import (
    CompressingSerializer,
    uncompressed_size,
    user_serde,
    with_compression,
)
from langgraph_dualsaver.hot import keys as K
from tests.factories import SAVER_KINDS
from tests.helpers import config
from tests.test_cli import Store, data, invoke
from tests.test_safe_decoding import (
    ALLOW_INVOICE,
    Invoice,
    evict_from_redis,
    hot_of,
    saver_of,
)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PLAIN = StrictSerializer()
SMALL = {"ticket": "case_8842", "status": "open"}  # well under min_bytes


def chat(messages: int = 40) -> list[HumanMessage]:
    """A conversation of ~1 KB messages: the value compression is for."""
    words = ["charged", "twice", "refund", "duplicate", "invoice", "login", "locked", "policy"]
    return [
        HumanMessage(content=" ".join(words[(i + j) % len(words)] for j in range(150)), id=str(i))
        for i in range(messages)
    ]


BIG = chat()
RAW_BIG = len(PLAIN.dumps_typed(BIG)[1])


class StreamCipher:
    """A real stream cipher from the standard library (a SHAKE-256 keystream over a
    random nonce): its output looks random, so nothing can compress it."""

    key = os.urandom(32)

    def _xor(self, nonce: bytes, data: bytes) -> bytes:
        stream = hashlib.shake_256(self.key + nonce).digest(len(data))
        mixed = int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")
        return mixed.to_bytes(len(data), "big")

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(16)
        return "shake", nonce + self._xor(nonce, plaintext)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        assert ciphername == "shake", ciphername
        return self._xor(ciphertext[:16], ciphertext[16:])


# -- the serde wrapper alone ----------------------------------------------------------


@pytest.mark.pure
def test_settings_are_checked() -> None:
    for bad in (
        {"algorithm": "lz4"},
        {"level": 0},
        {"level": 20},
        {"level": True},
        {"min_bytes": -1},
    ):
        with pytest.raises(ConfigurationError, match="Compression"):
            Compression(**bad)


@pytest.mark.pure
def test_small_and_incompressible_values_are_stored_as_the_serde_writes_them() -> None:
    serde = with_compression(StrictSerializer(), Compression(), 1 << 20)
    noise = os.urandom(4096)

    assert serde.dumps_typed(SMALL) == PLAIN.dumps_typed(SMALL)
    assert serde.dumps_typed(noise) == PLAIN.dumps_typed(noise)
    type_, data = serde.dumps_typed(BIG)
    assert type_ == "msgpack.zstd"
    assert data.startswith(ZSTD_MAGIC)
    assert len(data) < RAW_BIG / 3
    assert serde.loads_typed((type_, data)) == BIG
    assert uncompressed_size(type_, len(data), data[:18]) == RAW_BIG
    assert uncompressed_size("msgpack", 7, b"") == 7
    assert uncompressed_size("msgpack.zstd+aes", len(data), data[:18]) is None


@pytest.mark.pure
def test_off_still_reads_compressed_values_and_min_bytes_is_the_threshold() -> None:
    on = with_compression(StrictSerializer(), Compression(min_bytes=0), 1 << 20)
    off = with_compression(StrictSerializer(), None, 1 << 20)
    stored = on.dumps_typed(BIG)

    assert off.loads_typed(stored) == BIG
    assert off.dumps_typed(BIG) == PLAIN.dumps_typed(BIG)
    over = Compression(min_bytes=RAW_BIG + 1)
    assert with_compression(StrictSerializer(), over, 1 << 22).dumps_typed(BIG)[0] == "msgpack"


@pytest.mark.pure
def test_compression_goes_inside_encryption_whatever_the_user_passes() -> None:
    encrypted = EncryptedSerializer(StreamCipher(), StrictSerializer())
    serde = with_compression(encrypted, Compression(), 1 << 20)
    again = with_compression(serde, None, 1 << 20)  # new settings, not a second layer

    assert isinstance(serde, EncryptedSerializer)
    assert isinstance(serde.serde, CompressingSerializer)
    assert isinstance(again, EncryptedSerializer)
    assert isinstance(again.serde, CompressingSerializer)
    assert again.serde.compression is None
    assert isinstance(user_serde(serde), EncryptedSerializer)
    assert isinstance(user_serde(serde).serde, StrictSerializer)
    with pytest.raises(ConfigurationError, match="inside an EncryptedSerializer"):
        CompressingSerializer(encrypted, Compression(), 1 << 20)
    type_, _ = serde.dumps_typed(BIG)
    assert type_ == "msgpack.zstd+shake"  # EncryptedSerializer splits at the first "+"


@pytest.mark.pure
def test_with_allowlist_reaches_through_compression_and_encryption() -> None:
    encrypted = EncryptedSerializer(StreamCipher(), StrictSerializer())
    saver = RedisHotSaver(url="redis://127.0.0.1:1/0", serde=encrypted)  # never connects
    stored = saver.serde.dumps_typed([Invoice(650.0)] * 200)

    allowed = saver.with_allowlist(ALLOW_INVOICE)

    assert stored[0] == "msgpack.zstd+shake"
    assert allowed.serde.loads_typed(stored) == [Invoice(650.0)] * 200
    assert isinstance(allowed.serde.serde, CompressingSerializer)  # still compresses


@pytest.mark.pure
def test_bombs_are_refused_before_they_inflate() -> None:
    limit = 1 << 20
    serde = with_compression(StrictSerializer(), Compression(), limit)
    sized = zstandard.ZstdCompressor().compress(b"\0" * (8 * limit))
    unsized_maker = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    unsized = unsized_maker.compress(b"\0" * (8 * limit)) + unsized_maker.flush()
    # A header that lies: it declares 100 bytes, and the frame holds 8 MiB.
    small = zstandard.ZstdCompressor().compress(b"\0" * 100)
    lying = small[: len(small) - 3] + sized[len(small) - 3 :]

    with pytest.raises(StoredValueTooLargeError, match=r"8,388,608 bytes.*1,048,576"):
        serde.loads_typed(("msgpack.zstd", sized))
    with pytest.raises(StoredValueTooLargeError, match=r"more than 1,048,576 bytes"):
        serde.loads_typed(("msgpack.zstd", unsized))
    with pytest.raises(StoredValueError):
        serde.loads_typed(("msgpack.zstd", lying))
    with pytest.raises(StoredValueError, match="not a zstd frame"):
        serde.loads_typed(("msgpack.zstd", b"garbage"))
    assert isinstance(StoredValueTooLargeError("x"), ValueError)


# -- every saver, on real servers -------------------------------------------------------


def two_channels(big: Any, small: Any) -> Checkpoint:
    ckpt = empty_checkpoint()
    ckpt["id"] = str(uuid6(clock_seq=-1))
    ckpt["channel_values"] = {"big": big, "small": small}
    ckpt["channel_versions"] = {"big": 1, "small": 1}
    return ckpt


async def put_both(saver: BaseCheckpointSaver, thread_id: str) -> RunnableConfig:
    """``BIG`` and ``SMALL`` as channel values and as pending writes, in every tier."""
    saved = await saver.aput(
        config(thread_id), two_channels(BIG, SMALL), {"step": 0}, {"big": 1, "small": 1}
    )
    await saver.aput_writes(saved, [("big", BIG), ("small", SMALL)], "task-1")
    if isinstance(saver, DualSaver):
        await saver.aflush()
    return config(thread_id)


async def assert_reads_both(saver: BaseCheckpointSaver, cfg: RunnableConfig) -> None:
    found = await saver.aget_tuple(cfg)
    assert found is not None
    assert found.checkpoint["channel_values"] == {"big": BIG, "small": SMALL}
    assert sorted((w[1], w[2]) for w in found.pending_writes) == [("big", BIG), ("small", SMALL)]


def tiers_of(kind: str) -> list[str]:
    return {"postgres": ["postgres"], "redis": ["redis"]}.get(kind, ["redis", "postgres"])


async def stored(
    saver: BaseCheckpointSaver, tier: str, urls: tuple[str, str], thread_id: str
) -> dict[str, list[tuple[str, bytes]]]:
    """``channel -> [(type, bytes)]`` of the thread's values and writes, as the tier
    holds them (values first)."""
    redis_url, pg_dsn = urls
    found: dict[str, list[tuple[str, bytes]]] = {}
    if tier == "postgres":
        conn = await asyncpg.connect(pg_dsn)
        try:
            rows = await conn.fetch(
                "SELECT channel, type, blob FROM dualsaver_blobs WHERE thread_id = $1 "
                "UNION ALL SELECT channel, type, blob FROM dualsaver_writes WHERE thread_id = $1",
                thread_id,
            )
        finally:
            await conn.close()
        for row in rows:
            found.setdefault(row["channel"], []).append((row["type"], row["blob"]))
        return found
    hot = hot_of(saver)
    keys = K.thread_keys(hot.prefix, hot.shards, thread_id)
    client = aioredis.Redis.from_url(redis_url)
    try:
        blobs = await client.hgetall(keys.blobs)
        members = await client.zrange(keys.writes, 0, -1)
    finally:
        await client.aclose()
    for field, blob in blobs.items():
        channel = K.split_blob_field(field)[1]
        found.setdefault(channel, []).append(K.decode_blob(blob))  # type: ignore[arg-type]
    for member in members:
        _, write = K.split_write_member(member)
        found.setdefault(write.channel, []).append((write.type, write.data))
    return found


@pytest.mark.parametrize("kind", SAVER_KINDS)
async def test_large_values_are_stored_compressed_small_ones_as_before(
    kind: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread_id = f"compressed-{uuid.uuid4()}"
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix) as saver:
        cfg = await put_both(saver, thread_id)
        await assert_reads_both(saver, cfg)
        for tier in tiers_of(kind):
            held = await stored(saver, tier, (redis_url, pg_dsn), thread_id)
            assert held["small"] == [PLAIN.dumps_typed(SMALL)] * 2, tier
            assert len(held["big"]) == 2, tier
            for type_, data in held["big"]:
                assert type_ == "msgpack.zstd", tier
                assert len(data) < RAW_BIG / 3, tier
                assert zstandard.ZstdDecompressor().decompress(data) == PLAIN.dumps_typed(BIG)[1]


@pytest.mark.parametrize("kind", SAVER_KINDS)
@pytest.mark.parametrize(("before", "after"), [(None, Compression()), (Compression(), None)])
async def test_values_stored_either_way_read_after_the_setting_changes(
    kind: str,
    before: Compression | None,
    after: Compression | None,
    redis_url: str,
    pg_dsn: str,
    redis_prefix: str,
) -> None:
    thread_id = f"switch-{uuid.uuid4()}"
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, compression=before) as saver:
        cfg = await put_both(saver, thread_id)
        held = await stored(saver, tiers_of(kind)[0], (redis_url, pg_dsn), thread_id)
        assert {t for t, _ in held["big"]} == {"msgpack" if before is None else "msgpack.zstd"}
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, compression=after) as saver:
        await assert_reads_both(saver, cfg)
        if isinstance(saver, DualSaver):
            await assert_reads_both(saver.durable, cfg)
        newer = await put_both(saver, f"{thread_id}-new")
        await assert_reads_both(saver, newer)


@pytest.mark.parametrize("kind", SAVER_KINDS)
async def test_an_encrypted_serde_gets_compressed_plaintext(
    kind: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    cipher = StreamCipher()
    serde = EncryptedSerializer(cipher, StrictSerializer())
    thread_id = f"encrypted-{uuid.uuid4()}"
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, serde=serde) as saver:
        cfg = await put_both(saver, thread_id)
        await assert_reads_both(saver, cfg)
        for tier in tiers_of(kind):
            held = await stored(saver, tier, (redis_url, pg_dsn), thread_id)
            for type_, data in held["big"]:
                assert type_ == "msgpack.zstd+shake", tier
                # Encrypted: no plaintext, no zstd frame, and it does not compress.
                assert b"refund" not in data and not data.startswith(ZSTD_MAGIC), tier
                assert len(zstandard.ZstdCompressor().compress(data)) > 0.95 * len(data), tier
                # Compressed first: far smaller than the value, and a zstd frame inside.
                assert len(data) < RAW_BIG / 3, tier
                plaintext = cipher.decrypt("shake", data)
                assert plaintext.startswith(ZSTD_MAGIC), tier
                assert (
                    zstandard.ZstdDecompressor().decompress(plaintext)
                    == (PLAIN.dumps_typed(BIG)[1])
                )
            assert all(t == "msgpack+shake" for t, _ in held["small"]), tier


async def craft_bomb(
    saver: BaseCheckpointSaver, tier: str, urls: tuple[str, str], thread_id: str, bomb: bytes
) -> None:
    """Replace the thread's ``big`` value and write with ``bomb``, as anyone who can write
    to the tier could."""
    redis_url, pg_dsn = urls
    if tier == "postgres":
        conn = await asyncpg.connect(pg_dsn)
        try:
            for table in ("dualsaver_blobs", "dualsaver_writes"):
                await conn.execute(
                    f"UPDATE {table} SET type = 'msgpack.zstd', blob = $2 "
                    "WHERE thread_id = $1 AND channel = 'big'",
                    thread_id,
                    bomb,
                )
        finally:
            await conn.close()
        if isinstance(saver, DualSaver):
            await evict_from_redis(saver, redis_url, thread_id)
        return
    hot = hot_of(saver)
    keys = K.thread_keys(hot.prefix, hot.shards, thread_id)
    client = aioredis.Redis.from_url(redis_url)
    try:
        for field in await client.hkeys(keys.blobs):
            if K.split_blob_field(field)[1] == "big":
                await client.hset(keys.blobs, field, ormsgpack.packb(["msgpack.zstd", bomb]))
        for member in await client.zrange(keys.writes, 0, -1):
            cp, write = K.split_write_member(member)
            if write.channel == "big":
                forged = K.write_member(cp, replace(write, type="msgpack.zstd", data=bomb))
                await client.zrem(keys.writes, member)
                await client.zadd(keys.writes, {forged: 0})
    finally:
        await client.aclose()


BOMBED = [(kind, tier) for kind in SAVER_KINDS for tier in tiers_of(kind)]


@pytest.mark.parametrize(("kind", "tier"), BOMBED)
async def test_a_decompression_bomb_is_refused_and_nothing_else_breaks(
    kind: str, tier: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    limit = 1 << 20
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 * limit))  # 64 MiB in ~2 KB
    thread_id = f"bomb-{uuid.uuid4()}"
    urls = (redis_url, pg_dsn)
    async with saver_of(
        kind, redis_url, pg_dsn, redis_prefix, limits=Limits(max_value_bytes=limit)
    ) as saver:
        cfg = await put_both(saver, thread_id)
        neighbour = await put_both(saver, f"{thread_id}-neighbour")
        await craft_bomb(saver, tier, urls, thread_id, bomb)

        with pytest.raises(StoredValueTooLargeError, match=r"channel 'big'.*67,108,864 bytes"):
            await saver.aget_tuple(cfg)
        await assert_reads_both(saver, neighbour)
        later = await put_both(saver, f"{thread_id}-later")
        await assert_reads_both(saver, later)


@pytest.mark.parametrize("kind", SAVER_KINDS)
async def test_the_limit_applies_before_compression(
    kind: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    """A value that compresses under the limit but is over it raw is refused, named, and
    nothing is written: a value the savers write never inflates past what they read."""
    thread_id = f"over-{uuid.uuid4()}"
    limit = RAW_BIG - 1
    async with saver_of(
        kind, redis_url, pg_dsn, redis_prefix, limits=Limits(max_value_bytes=limit)
    ) as saver:
        with pytest.raises(CheckpointTooLargeError, match=r"channel 'big'.*before compression"):
            await put_both(saver, thread_id)
        assert await saver.aget_tuple(config(thread_id)) is None


# -- dualsaver status -------------------------------------------------------------------


def exact_sizes(dsn: str) -> tuple[int, int, int]:
    """``(values, stored bytes, bytes before compression)`` of every value PostgreSQL
    holds, each decompressed: what status's sample must agree with on a small table."""

    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(
                "SELECT type, blob FROM dualsaver_blobs WHERE type <> 'empty' "
                "UNION ALL SELECT type, blob FROM dualsaver_writes"
            )
        finally:
            await conn.close()

    rows = asyncio.run(fetch())
    inflate = zstandard.ZstdDecompressor().decompress
    raw = sum(len(inflate(r["blob"]) if r["type"].endswith(".zstd") else r["blob"]) for r in rows)
    return len(rows), sum(len(r["blob"]) for r in rows), raw


def test_status_shows_the_compression_ratio(redis_url: str, pg_dsn: str, redis_prefix: str):
    store = Store(redis_url, pg_dsn, redis_prefix)
    with store.saver(background_flush=False) as saver:
        saver.setup()
        for n in range(3):
            saved = saver.put(
                config(f"status-{n}"), two_channels(BIG, SMALL), {}, {"big": 1, "small": 1}
            )
            saver.put_writes(saved, [("big", BIG), ("small", SMALL)], "task-1")
        saver.flush()
    values, stored_bytes, raw = exact_sizes(pg_dsn)

    report = data(invoke(store, "status", "--json"))["compression"]
    text = invoke(store, "status")

    assert values == 12
    assert report == {
        "sampled": 12,
        "compressed": 6,
        "size_unknown": 0,
        "stored_bytes": stored_bytes,
        "uncompressed_bytes": raw,
        "ratio": round(raw / stored_bytes, 2),
    }
    assert report["ratio"] > 3
    assert f"{report['ratio']:.2f}x" in text.stdout and "6 of 12 sampled values" in text.stdout


@pytest.mark.pure
def test_status_counts_encrypted_values_apart() -> None:
    serde = with_compression(
        EncryptedSerializer(StreamCipher(), StrictSerializer()), Compression(), 1 << 22
    )
    plain = with_compression(StrictSerializer(), Compression(), 1 << 22)
    values = [serde.dumps_typed(BIG), plain.dumps_typed(BIG), plain.dumps_typed(SMALL)]

    report = summarize([(t, len(d), d[:18]) for t, d in values])

    assert report["compressed"] == 2 and report["size_unknown"] == 1
    assert report["uncompressed_bytes"] == RAW_BIG + len(PLAIN.dumps_typed(SMALL)[1])
    assert "1 encrypted (size unknown), not counted" in describe(report)


async def test_status_samples_a_table_larger_than_its_sample(pg_dsn: str) -> None:
    """Past ``rows`` values a table is sampled by pages (``TABLESAMPLE SYSTEM``); a sample
    that finds too few rows is taken again with more pages, never none."""
    async with saver_of("postgres", "", pg_dsn, "") as saver:
        for n in range(30):
            await put_both(saver, f"sampled-{n}")
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute("ANALYZE dualsaver_blobs; ANALYZE dualsaver_writes")
        finally:
            await conn.close()

        report = await compression_sample(saver, rows=10)  # 60 rows in each table

    assert 10 <= report["sampled"] <= 20
    assert report["ratio"] is not None and report["ratio"] > 3
