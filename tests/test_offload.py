"""Values stored as ``Offload.min_bytes`` or more go to an object store (a local
directory, or a real S3 protocol server: moto's standalone server, a subprocess) under
their sha256, and the tiers keep a reference; reads resolve it in every saver kind and
both chain modes; ``gc`` collects what nothing references, and never what something
does, including a record only queued in the outbox or an object a crashed put left."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from click.testing import Result
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from typer.testing import CliRunner

from langgraph_dualsaver import (
    ConfigurationError,
    DualSaver,
    ObjectStoreUnavailableError,
    Offload,
    OffloadedValueMissingError,
    OffloadNotConfiguredError,
    PostgresDurableSaver,
    RedisHotSaver,
    StrictSerializer,
)
from langgraph_dualsaver.chain.outbox import Outbox
from langgraph_dualsaver.cli.app import app
from langgraph_dualsaver.compression import StoredValueTooLargeError
from langgraph_dualsaver.hot import keys as K
from langgraph_dualsaver.offload.chunks import CHUNKS
from langgraph_dualsaver.offload.gc import collect
from langgraph_dualsaver.offload.serde import (
    MARK,
    REFERENCE,
    OffloadingSerializer,
    parse_reference,
)
from langgraph_dualsaver.offload.store import chunk_key, object_key
from langgraph_dualsaver.records import Limits
from tests.factories import SAVER_KINDS
from tests.helpers import checkpoint, config, fetch
from tests.s3server import S3Server, s3_server
from tests.test_cli import Store, closed_port
from tests.test_compression import ZSTD_MAGIC, StreamCipher
from tests.test_safe_decoding import evict_from_redis, hot_of, saver_of

STORES = ["file", "s3"]
MIN = 64 * 1024
PLAIN = StrictSerializer()


def value(seed: int, size: int = 100_000) -> bytes:
    """Bytes zstd cannot shrink: stored as they serialize, over ``MIN``."""
    return random.Random(seed).randbytes(size)


def digest_of(obj: Any) -> str:
    """The object key digest of a value that compression leaves as it is."""
    return hashlib.sha256(PLAIN.dumps_typed(obj)[1]).hexdigest()


@dataclass
class Location:
    url: str
    options: dict[str, Any]

    def offload(self, min_bytes: int = MIN, chunk_bytes: int | None = None) -> Offload:
        """Whole-value offload unless ``chunk_bytes`` is given (the tests of chunks)."""
        return Offload(self.url, min_bytes, chunk_bytes=chunk_bytes, **self.options)

    def read_only(self) -> Offload:
        return Offload.read_only(self.url, **self.options)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(params=STORES)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    server = request.getfixturevalue("s3") if request.param == "s3" else None
    return _location(tmp_path, server)


@pytest.fixture
def local(tmp_path: Path) -> Location:
    return _location(tmp_path, None)


def _location(tmp_path: Path, server: S3Server | None) -> Location:
    """A local directory, or a fresh bucket on ``server``."""
    if server is None:
        return Location((tmp_path / "objects").as_uri(), {})
    bucket = f"offload-{uuid.uuid4().hex[:12]}"
    server.create_bucket(bucket)
    return Location(f"s3://{bucket}/objects", server.options())


def digests(offload: Offload) -> set[str | None]:
    return {found.digest for found in offload.objects()}


async def stored_values(
    saver: BaseCheckpointSaver[Any], redis_url: str, pg_dsn: str, thread_id: str
) -> list[tuple[str, bytes]]:
    """``(type, bytes)`` of the thread's values and writes as each tier stores them."""
    found: list[tuple[str, bytes]] = []
    if not isinstance(saver, RedisHotSaver):
        rows = await fetch(
            pg_dsn,
            "SELECT type, blob FROM dualsaver_blobs WHERE thread_id = $1 "
            "UNION ALL SELECT type, blob FROM dualsaver_writes WHERE thread_id = $1",
            thread_id,
        )
        found += [(r["type"], bytes(r["blob"])) for r in rows]
    if not isinstance(saver, PostgresDurableSaver):
        hot = hot_of(saver)
        keys = K.thread_keys(hot.prefix, hot.shards, thread_id)
        client = aioredis.Redis.from_url(redis_url)
        try:
            for blob in await client.hvals(keys.blobs):
                type_, data = K.decode_blob(blob)
                found.append((type_, data or b""))
            for member in await client.zrange(keys.writes, 0, -1):
                write = K.split_write_member(member)[1]
                found.append((write.type, write.data))
        finally:
            await client.aclose()
    return found


async def put_value(saver: BaseCheckpointSaver[Any], thread_id: str, obj: Any, **meta: Any) -> Any:
    saved = await saver.aput(config(thread_id), checkpoint(obj, 1), {"step": 0, **meta}, {"x": 1})
    if isinstance(saver, DualSaver):
        await saver.aflush()
    return saved


# -- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SAVER_KINDS)
async def test_values_and_writes_round_trip_through_the_store(
    kind: str, location: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = location.offload()
    big, written = value(1), value(2)
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, offload=offload) as saver:
        saved = await saver.aput(config("t"), checkpoint(big, 1), {"step": 0}, {"x": 1})
        await saver.aput_writes(saved, [("x", written), ("y", "small")], "task-1")
        if isinstance(saver, DualSaver):
            await saver.aflush()

        stored = await stored_values(saver, redis_url, pg_dsn, "t")
        offloaded = [(t, d) for t, d in stored if t.endswith(MARK)]
        assert offloaded and all(len(d) < 100 for _, d in offloaded)
        assert {parse_reference(d)[0] for _, d in offloaded} == {
            digest_of(big),
            digest_of(written),
        }
        assert ("msgpack", PLAIN.dumps_typed("small")[1]) in stored  # small: in the tier
        assert digests(offload) == {digest_of(big), digest_of(written)}

        found = await saver.aget_tuple(config("t"))
        assert found is not None
        assert found.checkpoint["channel_values"]["x"] == big
        assert [w[1:] for w in found.pending_writes or []] == [("x", written), ("y", "small")]
        if isinstance(saver, DualSaver):  # and from PostgreSQL, once Redis lost it
            await evict_from_redis(saver, redis_url, "t")
            again = await saver.aget_tuple(config("t"))
            assert again is not None and again.checkpoint["channel_values"]["x"] == big
            listed = [t async for t in saver.alist(config("t"))]
            assert listed[0].checkpoint["channel_values"]["x"] == big


async def test_the_same_bytes_are_one_object_across_threads(
    local: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = local.offload()
    big = value(3)
    async with saver_of(
        "dual_write_behind", redis_url, pg_dsn, redis_prefix, offload=offload
    ) as saver:
        for thread_id in ("a", "b", "c"):
            await put_value(saver, thread_id, big)
        rows = await fetch(pg_dsn, "SELECT DISTINCT blob FROM dualsaver_blobs")
        assert len(rows) == 1  # one reference, three threads
        assert [found.digest for found in offload.objects()] == [digest_of(big)]
        for thread_id in ("a", "b", "c"):
            found = await saver.aget_tuple(config(thread_id))
            assert found is not None and found.checkpoint["channel_values"]["x"] == big


async def test_rewriting_an_existing_object_refreshes_its_time(local: Location) -> None:
    offload = local.offload()
    digest = offload.put(b"x" * 10)
    path = Path(offload.local_dir or "") / object_key(digest)
    os.utime(path, (time.time() - 86400, time.time() - 86400))
    offload.put(b"x" * 10)
    assert time.time() - path.stat().st_mtime < 60  # so gc's grace protects it again


# -- settings over time -----------------------------------------------------------------


async def test_turning_offload_off_still_reads_references(
    location: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    before, after = value(4), value(5)
    async with saver_of(
        "dual_write_through", redis_url, pg_dsn, redis_prefix, compression=None
    ) as plain:
        await put_value(plain, "inline", before)  # written before offload was on
    async with saver_of(
        "dual_write_through", redis_url, pg_dsn, redis_prefix, offload=location.offload()
    ) as saver:
        await put_value(saver, "offloaded", after)
        inline = await saver.aget_tuple(config("inline"))
        assert inline is not None and inline.checkpoint["channel_values"]["x"] == before
    read_only = location.read_only()
    async with saver_of(
        "dual_write_through", redis_url, pg_dsn, redis_prefix, offload=read_only
    ) as saver:
        found = await saver.aget_tuple(config("offloaded"))
        assert found is not None and found.checkpoint["channel_values"]["x"] == after
        await put_value(saver, "later", value(6))  # not offloaded any more
        types = {t for t, _ in await stored_values(saver, redis_url, pg_dsn, "later")}
        assert types == {"bytes"}  # raw bytes, as the serde types them
        assert digests(read_only) == {digest_of(after)}
    async with saver_of("postgres", redis_url, pg_dsn, redis_prefix) as none:
        with pytest.raises(OffloadNotConfiguredError, match="offload=Offload") as raised:
            await none.aget_tuple(config("offloaded"))
        assert "thread 'offloaded'" in str(raised.value)


@pytest.mark.pure
def test_offload_stays_outside_compression_and_encryption_and_allowlists(tmp_path: Path) -> None:
    offload = Offload((tmp_path / "o").as_uri(), min_bytes=1000)
    encrypted = EncryptedSerializer(StreamCipher(), StrictSerializer())
    saver = RedisHotSaver(url="redis://127.0.0.1:1/0", offload=offload, serde=encrypted)
    text = random.Random(1).randbytes(10_000).hex()  # halves under zstd
    type_, ref = saver.serde.dumps_typed(text)
    assert type_ == "msgpack.zstd+shake.offload"  # compressed, encrypted, then offloaded
    stored = offload.get(parse_reference(ref)[0])
    assert stored is not None and not stored.startswith(ZSTD_MAGIC)  # ciphertext
    allowed = saver.with_allowlist([("tests.nowhere", "Thing")])
    assert isinstance(allowed.serde, OffloadingSerializer)
    assert allowed.serde.loads_typed((type_, ref)) == text


@pytest.mark.pure
def test_min_bytes_is_compared_with_the_stored_bytes(tmp_path: Path) -> None:
    exactly = len(PLAIN.dumps_typed(bytes(1000))[1])
    offload = Offload((tmp_path / "o").as_uri(), min_bytes=exactly, chunk_bytes=None)
    plain = RedisHotSaver(url="redis://127.0.0.1:1/0", offload=offload, compression=None)
    assert plain.serde.dumps_typed(bytes(999))[0] == "bytes"  # one byte short
    type_, ref = plain.serde.dumps_typed(bytes(1000))
    assert type_ == "bytes.offload" and parse_reference(ref)[1] == exactly
    assert plain.serde.loads_typed((type_, ref)) == bytes(1000)

    zstd = RedisHotSaver(url="redis://127.0.0.1:1/0", offload=offload)
    type_, data = zstd.serde.dumps_typed(bytes(100_000))  # compresses below min_bytes
    assert type_ == "bytes.zstd" and len(data) < exactly
    type_, _ = zstd.serde.dumps_typed(value(7, 2000))  # compression cannot shrink it
    assert type_ == "bytes.offload"


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SAVER_KINDS)
async def test_a_missing_object_names_thread_checkpoint_and_key(
    kind: str, local: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = local.offload()
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, offload=offload) as saver:
        saved = await put_value(saver, "t", value(8))
        checkpoint_id = saved["configurable"]["checkpoint_id"]
        offload.delete(object_key(digest_of(value(8))))
        with pytest.raises(OffloadedValueMissingError) as raised:
            await saver.aget_tuple(config("t"))
        message = str(raised.value)
        assert "thread 't'" in message and repr(checkpoint_id) in message
        assert "channel 'x'" in message and digest_of(value(8)) in message

        small = await put_value(saver, "w", "small")
        await saver.aput_writes(small, [("notes", value(9))], "task-2")
        offload.delete(object_key(digest_of(value(9))))
        with pytest.raises(OffloadedValueMissingError, match="pending write to 'notes'") as raised:
            await saver.aget_tuple(config("w"))
        assert "thread 'w'" in str(raised.value)


@pytest.mark.pure
def test_bad_settings_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = (tmp_path / "o").as_uri()
    bad: list[tuple[Any, ...]] = [
        ("http://example.com/x",),
        ("file://relative/dir",),
        ("s3:///no-bucket",),
        ("",),
        (directory, 0),
        (directory, "1024"),
        (directory, True),
    ]
    for args in bad:
        with pytest.raises(ConfigurationError):
            Offload(*args)
    with pytest.raises(ConfigurationError, match="s3:// only"):
        Offload(directory, endpoint="http://127.0.0.1:9")
    with pytest.raises(ConfigurationError, match="bad options"):
        Offload("s3://bucket/x", no_such_option=1)
    with pytest.raises(ConfigurationError, match="must be an Offload"):
        RedisHotSaver(url="redis://127.0.0.1:1/0", offload=directory)  # type: ignore[arg-type]
    monkeypatch.setenv("DUALSAVER_OFFLOAD_MIN_BYTES", "lots")
    from langgraph_dualsaver.offload.store import env_offload

    with pytest.raises(ConfigurationError, match="DUALSAVER_OFFLOAD_MIN_BYTES"):
        env_offload(directory)
    unreachable = Offload("s3://bucket/x", endpoint="http://127.0.0.1:9", region="us-east-1")
    with pytest.raises(ObjectStoreUnavailableError, match="could not store"):
        unreachable.put(b"x")


@pytest.mark.parametrize("kind", SAVER_KINDS)
async def test_an_unreachable_store_fails_the_put_fast_and_nothing_is_written(
    kind: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    down = Offload("s3://bucket/x", MIN, endpoint=f"http://127.0.0.1:{closed_port()}",
                   region="us-east-1", access_key_id="a", secret_access_key="b")  # fmt: skip
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, offload=down) as saver:
        started = time.monotonic()
        with pytest.raises(ObjectStoreUnavailableError, match="channel 'x': could not store"):
            await saver.aput(config("t"), checkpoint(value(60), 1), {"step": 0}, {"x": 1})
        assert time.monotonic() - started < 15  # not obstore's 3 minutes of retries
        await put_value(saver, "t", "small")  # values under min_bytes still go in
        found = await saver.aget_tuple(config("t"))
        assert found is not None and found.checkpoint["channel_values"]["x"] == "small"
        assert len([t async for t in saver.alist(config("t"))]) == 1


@pytest.mark.parametrize("kind", SAVER_KINDS)
async def test_a_store_down_on_read_is_named_and_not_taken_for_redis_down(
    kind: str, s3: S3Server, redis_url: str, pg_dsn: str, redis_prefix: str, tmp_path: Path
) -> None:
    up = _location(tmp_path, s3)
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, offload=up.offload()) as saver:
        await put_value(saver, "t", value(61))
    options = {**up.options, "endpoint": f"http://127.0.0.1:{closed_port()}"}
    down = Offload(up.url, MIN, **options)
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, offload=down) as saver:
        with pytest.raises(ObjectStoreUnavailableError, match="could not read an object"):
            await saver.aget_tuple(config("t"))
        if isinstance(saver, DualSaver):  # Redis answered: no degraded mode for this
            counts = saver.counts()
            assert counts.redis_down_for_s is None and counts.degraded_reads == 0


async def test_gc_needs_an_offload_and_a_grace(
    local: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    async with saver_of("postgres", redis_url, pg_dsn, redis_prefix) as saver:
        with pytest.raises(ConfigurationError, match="offload=Offload"):
            await collect(saver)
    offload = local.offload()
    async with saver_of("postgres", redis_url, pg_dsn, redis_prefix, offload=offload) as saver:
        with pytest.raises(ConfigurationError, match="grace"):
            await collect(saver, grace=timedelta(seconds=-1))


# -- crash safety -----------------------------------------------------------------------

CRASHING_PUT = """
import asyncio, json, os, random, signal, sys
from langgraph.checkpoint.base import empty_checkpoint
from langgraph_dualsaver import DualSaver, Offload, StrictSerializer

class KillAfterOffload(StrictSerializer):
    def dumps_typed(self, obj):
        if obj == "kill":  # channel b, serialized after channel a was offloaded
            os.kill(os.getpid(), signal.SIGKILL)
        return super().dumps_typed(obj)

args = json.loads(sys.argv[1])
ckpt = empty_checkpoint()
ckpt["channel_values"] = {"a": random.Random(11).randbytes(100_000), "b": "kill"}
ckpt["channel_versions"] = {"a": 1, "b": 1}

async def main():
    offload = Offload(args["url"], 65536, chunk_bytes=args["chunks"], **args["options"])
    async with DualSaver.from_conn_string(
        args["redis"], args["pg"], mode=args["mode"], prefix=args["prefix"],
        serde=KillAfterOffload(), offload=offload, background_flush=False,
    ) as saver:
        config = {"configurable": {"thread_id": "crash", "checkpoint_ns": ""}}
        await saver.aput(config, ckpt, {"step": 0}, {"a": 1, "b": 1})

asyncio.run(main())
"""


@pytest.mark.parametrize("mode", ["write_behind", "write_through"])
async def test_a_crash_between_object_and_record_leaves_an_orphan_gc_collects(
    mode: str, location: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = location.offload()
    async with saver_of(f"dual_{mode}", redis_url, pg_dsn, redis_prefix, offload=offload) as saver:
        args = {"url": location.url, "options": location.options, "redis": redis_url,
                "pg": pg_dsn, "prefix": redis_prefix, "mode": mode, "chunks": None}  # fmt: skip
        child = subprocess.run(
            [sys.executable, "-c", CRASHING_PUT, json.dumps(args)], timeout=120, check=False
        )
        assert child.returncode == -signal.SIGKILL

        orphan = digest_of(value(11))
        assert digests(offload) == {orphan}
        assert offload.get(orphan) == PLAIN.dumps_typed(value(11))[1]  # whole and durable
        assert await saver.aget_tuple(config("crash")) is None  # nothing references it
        assert await Outbox.of(saver.hot, "test").length() == 0
        assert await fetch(pg_dsn, "SELECT 1 FROM dualsaver_blobs") == []
        if offload.local_dir is not None:  # a writer killed mid-write leaves its temp file
            half = offload.local_dir / "sha256" / "ab" / (("ab" + "0" * 62) + "#3")
            half.parent.mkdir(parents=True, exist_ok=True)
            half.write_bytes(b"half an object")

        young = await collect(saver, grace=timedelta(hours=1))
        assert young.swept == 0 and young.kept_young == young.objects
        swept = await collect(saver, grace=timedelta(0))
        assert swept.swept == swept.objects and swept.marked == 0
        assert swept.leftovers == (1 if offload.local_dir is not None else 0)
        assert list(offload.objects()) == []


# -- gc ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SAVER_KINDS)
async def test_gc_collects_what_delete_prune_and_delete_for_runs_released(
    kind: str, local: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = local.offload()
    kept, old, latest, deleted, run = (value(n) for n in (20, 21, 22, 23, 24))
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, offload=offload) as saver:
        await put_value(saver, "kept", kept)
        first = await put_value(saver, "pruned", old)
        await saver.aput(first, checkpoint(latest, 2), {"step": 1}, {"x": 2})
        await put_value(saver, "deleted", deleted)
        await put_value(saver, "run", run, run_id="run-1")
        assert len(digests(offload)) == 5

        await saver.adelete_thread("deleted")
        await saver.aprune(["pruned"], strategy="keep_latest")
        await saver.adelete_for_runs(["run-1"])
        if isinstance(saver, DualSaver):
            await saver.aflush()

        dry = await collect(saver, grace=timedelta(0), dry_run=True)
        assert dry.swept == 3 and len(digests(offload)) == 5  # nothing deleted
        report = await collect(saver, grace=timedelta(0))
        assert sorted(report.swept_keys) == sorted(
            object_key(digest_of(v)) for v in (old, deleted, run)
        )
        assert digests(offload) == {digest_of(kept), digest_of(latest)}
        for thread_id, expected in (("kept", kept), ("pruned", latest)):
            found = await saver.aget_tuple(config(thread_id))
            assert found is not None and found.checkpoint["channel_values"]["x"] == expected


async def test_gc_keeps_an_object_only_queued_in_the_outbox(
    location: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = location.offload()
    big = value(30)
    async with saver_of(
        "dual_write_behind", redis_url, pg_dsn, redis_prefix, offload=offload
    ) as saver:
        assert isinstance(saver, DualSaver)
        await saver.aput(config("queued"), checkpoint(big, 1), {"step": 0}, {"x": 1})
        await evict_from_redis(saver, redis_url, "queued")  # only the outbox entry is left
        assert await fetch(pg_dsn, "SELECT 1 FROM dualsaver_blobs") == []
        assert await Outbox.of(saver.hot, "test").length() == 1

        report = await collect(saver, grace=timedelta(0))
        assert report.marked == 1 and report.swept == 0
        assert digests(offload) == {digest_of(big)}

        await saver.aflush()
        await evict_from_redis(saver, redis_url, "queued")
        assert (await collect(saver, grace=timedelta(0))).swept == 0
        found = await saver.aget_tuple(config("queued"))
        assert found is not None and found.checkpoint["channel_values"]["x"] == big


async def test_gc_keeps_what_a_redis_only_saver_references(
    local: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = local.offload()
    async with saver_of("redis", redis_url, pg_dsn, redis_prefix, offload=offload) as saver:
        saved = await put_value(saver, "t", value(40))
        await saver.aput_writes(saved, [("x", value(41))], "task-1")
        report = await collect(saver, grace=timedelta(0))
        assert report.marked == 2 and report.swept == 0 and report.objects == 2


# -- the CLI ----------------------------------------------------------------------------


def cli(store: Store, offload: Location, *args: str) -> Result:
    env = {**store.env, "DUALSAVER_OFFLOAD_URL": offload.url}
    return CliRunner().invoke(app, list(args), env=env)


def test_cli_gc_and_status_show_the_store(
    local: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    store = Store(redis_url, pg_dsn, redis_prefix)
    offload = local.offload(min_bytes=256 * 1024)  # the default, as the CLI's is

    async def seed() -> None:
        async with saver_of(
            "dual_write_behind", redis_url, pg_dsn, redis_prefix, offload=offload
        ) as saver:
            await put_value(saver, "kept", value(50, 300_000))
            await put_value(saver, "gone", value(51, 300_000))
            await saver.adelete_thread("gone")
            await saver.aflush()

    asyncio.run(seed())
    status = cli(store, local, "status", "--json")
    assert status.exit_code == 0, status.output
    shown = json.loads(status.stdout)["offload"]
    assert shown["objects"] == 2 and shown["bytes"] == 600_000 and shown["url"] == local.url
    assert shown["references_sampled"] == shown["sampled"] == 1  # "kept"'s one value
    text = cli(store, local, "status")
    assert "offload" in text.stdout and "2 objects" in text.stdout

    dry = cli(store, local, "gc", "--dry-run", "--grace", "0", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["swept"] == 1 and len(digests(offload)) == 2
    young = cli(store, local, "gc", "--grace", "1h")
    assert young.exit_code == 0 and "deleted 0" in young.stdout, young.output
    done = cli(store, local, "gc", "--grace", "0")
    assert done.exit_code == 0 and "deleted 1" in done.stdout, done.output
    assert digests(offload) == {digest_of(value(50, 300_000))}
    bad = cli(store, local, "gc", "--grace", "soon")
    assert bad.exit_code != 0 and "not a duration" in bad.output


# -- chunked values ---------------------------------------------------------------------

WORDS = [f"w{n:x}" for n in range(2000)]
CHUNK = 16 * 1024
"""The default average chunk."""


def history(messages: int, seed: int = 1) -> list[str]:
    """A chat history: ``messages`` texts of about 1 KB each, compressible like text,
    the same first messages for every length (a value that grows)."""
    out = []
    for n in range(messages):
        rng = random.Random(seed * 100_003 + n)
        out.append(" ".join(rng.choice(WORDS) for _ in range(200))[:1024])
    return out


def chunked(location: Location, **options: Any) -> Offload:
    return Offload(location.url, MIN, chunk_bytes=CHUNK, **options, **location.options)


def chunk_objects(offload: Offload) -> dict[str, int]:
    """Digest -> stored size of every chunk in the store."""
    return {f.digest: f.size for f in offload.objects() if f.chunk and f.digest is not None}


def chunk_refs(stored: list[tuple[str, bytes]]) -> list[list[str]]:
    """The chunk digests each stored chunked reference lists."""
    return [
        [m.group(1).decode() for m in REFERENCE.finditer(data)]
        for type_, data in stored
        if type_.endswith(CHUNKS)
    ]


@pytest.mark.parametrize("kind", SAVER_KINDS)
async def test_chunked_values_and_writes_round_trip(
    kind: str, location: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = chunked(location)
    big, written = history(200), history(120, seed=2)
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, offload=offload) as saver:
        saved = await saver.aput(config("t"), checkpoint(big, 1), {"step": 0}, {"x": 1})
        await saver.aput_writes(saved, [("x", written), ("y", "small")], "task-1")
        if isinstance(saver, DualSaver):
            await saver.aflush()

        stored = await stored_values(saver, redis_url, pg_dsn, "t")
        assert {t for t, _ in stored if t.endswith(CHUNKS)} == {"msgpack.chunks"}
        refs = chunk_refs(stored)
        assert refs and all(len(r) >= 5 for r in refs)  # ~200 KB in ~20 KiB chunks
        assert set(chunk_objects(offload)) == {d for r in refs for d in r}
        raw = len(PLAIN.dumps_typed(big)[1])
        assert sum(chunk_objects(offload).values()) < raw  # each chunk zstd-compressed
        assert ("msgpack", PLAIN.dumps_typed("small")[1]) in stored

        found = await saver.aget_tuple(config("t"))
        assert found is not None and found.checkpoint["channel_values"]["x"] == big
        assert [w[1:] for w in found.pending_writes or []] == [("x", written), ("y", "small")]
        if isinstance(saver, DualSaver):  # and from PostgreSQL, once Redis lost it
            await evict_from_redis(saver, redis_url, "t")
            again = await saver.aget_tuple(config("t"))
            assert again is not None and again.checkpoint["channel_values"]["x"] == big
    fresh = chunked(location)  # another process: every chunk fetched (S3: concurrently)
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, offload=fresh) as saver:
        found = await saver.aget_tuple(config("t"))
        assert found is not None and found.checkpoint["channel_values"]["x"] == big
        assert [w[1:] for w in found.pending_writes or []] == [("x", written), ("y", "small")]


async def test_a_value_that_grows_by_one_message_stores_about_one_new_chunk(
    location: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = chunked(location)
    async with saver_of(
        "dual_write_behind", redis_url, pg_dsn, redis_prefix, offload=offload
    ) as saver:
        saved = await put_value(saver, "t", history(300))
        before = chunk_objects(offload)
        added: list[int] = []
        for step in range(1, 6):  # one 1 KB message more each step
            saved = await saver.aput(
                saved, checkpoint(history(300 + step), step + 1), {"step": step}, {"x": step + 1}
            )
            now = chunk_objects(offload)
            added.append(len(now) - len(before))
            new_bytes = sum(now.values()) - sum(before.values())
            assert new_bytes < sum(before.values()) / 5  # not another copy of the history
            before = now
        # the last chunk (where the message went) and the first (its length is there)
        assert all(1 <= n <= 2 for n in added), added
        assert isinstance(saver, DualSaver)
        await saver.aflush()
        found = await saver.aget_tuple(config("t"))
        assert found is not None and found.checkpoint["channel_values"]["x"] == history(305)
        first = [t async for t in saver.alist(config("t"))][-1]
        assert first.checkpoint["channel_values"]["x"] == history(300)


async def test_whole_value_references_and_inline_values_still_read_with_chunking(
    location: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    whole, inline, new = history(150), history(2), history(151)
    before = location.offload(min_bytes=8192)  # the history compresses to under MIN
    async with saver_of(
        "dual_write_through", redis_url, pg_dsn, redis_prefix, offload=before
    ) as saver:  # written before chunking: a .offload reference
        await put_value(saver, "whole", whole)
        await put_value(saver, "inline", inline)  # under min_bytes: in the tiers
        types = {t for t, _ in await stored_values(saver, redis_url, pg_dsn, "whole")}
        assert types == {"msgpack.zstd.offload"}
    async with saver_of(
        "dual_write_through", redis_url, pg_dsn, redis_prefix, offload=chunked(location)
    ) as saver:
        await put_value(saver, "new", new)
        for thread_id, expected in (("whole", whole), ("inline", inline), ("new", new)):
            found = await saver.aget_tuple(config(thread_id))
            assert found is not None and found.checkpoint["channel_values"]["x"] == expected
    for reader in (location.read_only(), location.offload()):  # chunking off: still reads
        async with saver_of(
            "dual_write_through", redis_url, pg_dsn, redis_prefix, offload=reader
        ) as saver:
            found = await saver.aget_tuple(config("new"))
            assert found is not None and found.checkpoint["channel_values"]["x"] == new
    async with saver_of("dual_write_through", redis_url, pg_dsn, redis_prefix) as none:
        with pytest.raises(OffloadNotConfiguredError, match=r"'msgpack\.chunks'") as raised:
            await none.aget_tuple(config("new"))
        assert "thread 'new'" in str(raised.value)


@pytest.mark.parametrize("kind", SAVER_KINDS)
async def test_a_missing_chunk_names_thread_checkpoint_and_key(
    kind: str, local: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = chunked(local)
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, offload=offload) as saver:
        saved = await put_value(saver, "t", history(100))
        checkpoint_id = saved["configurable"]["checkpoint_id"]
        (refs,) = chunk_refs(await stored_values(saver, redis_url, pg_dsn, "t"))[:1]
        offload.delete(chunk_key(refs[2]))
    # another process (the writer's own keeps the chunks it wrote in memory)
    async with saver_of(kind, redis_url, pg_dsn, redis_prefix, offload=chunked(local)) as saver:
        with pytest.raises(OffloadedValueMissingError) as raised:
            await saver.aget_tuple(config("t"))
        message = str(raised.value)
        assert "thread 't'" in message and repr(checkpoint_id) in message
        assert "channel 'x'" in message and f"chunk sha256:{refs[2]}" in message


async def test_a_chunked_value_over_the_limit_is_refused_before_any_fetch(
    local: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = chunked(local)
    async with saver_of("postgres", redis_url, pg_dsn, redis_prefix, offload=offload) as saver:
        await put_value(saver, "t", history(100))
    for found in list(offload.objects()):  # had it fetched, a chunk would be missing
        offload.delete(found.key)
    small = Limits(max_value_bytes=50_000)
    async with saver_of(
        "postgres", redis_url, pg_dsn, redis_prefix, offload=offload, limits=small
    ) as saver:
        with pytest.raises(StoredValueTooLargeError, match="over the limit of 50,000") as raised:
            await saver.aget_tuple(config("t"))
        assert "thread 't'" in str(raised.value)


def test_a_fresh_chunk_is_not_written_again_and_an_old_one_is(local: Location) -> None:
    offload = chunked(local)
    (digest,) = offload.put_chunks([b"chunk" * 1000])
    path = Path(offload.local_dir or "") / chunk_key(digest)
    five_minutes_ago = time.time() - 300
    os.utime(path, (five_minutes_ago, five_minutes_ago))
    again = chunked(local)  # another process: nothing remembered, the store is asked
    assert again.put_chunks([b"chunk" * 1000]) == [digest]
    assert path.stat().st_mtime == pytest.approx(five_minutes_ago)  # not rewritten
    an_hour_ago = time.time() - 3600  # older than refresh_after (15 min): written again
    os.utime(path, (an_hour_ago, an_hour_ago))
    chunked(local).put_chunks([b"chunk" * 1000])
    assert time.time() - path.stat().st_mtime < 60
    assert offload.get_chunks([digest]) == [b"chunk" * 1000]


async def test_gc_keeps_shared_chunks_while_any_version_references_them(
    location: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = chunked(location, refresh_after=timedelta(0))
    async with saver_of(
        "dual_write_behind", redis_url, pg_dsn, redis_prefix, offload=offload
    ) as saver:
        assert isinstance(saver, DualSaver)
        first = await put_value(saver, "t", history(200))
        await saver.aput(first, checkpoint(history(201), 2), {"step": 1}, {"x": 2})
        await put_value(saver, "other", history(150, seed=3))
        await saver.aflush()
        old, new = chunk_refs(
            [(t, d) for t, d in await stored_values(saver, redis_url, pg_dsn, "t")]
        )[:2]
        shared = set(old) & set(new)
        assert len(shared) >= len(set(old)) - 2  # all but the first and last chunk

        kept = await collect(saver, grace=timedelta(0))
        assert kept.swept == 0 and kept.marked == len(chunk_objects(offload))

        await saver.aprune(["t"], strategy="keep_latest")
        await saver.aflush()
        pruned = await collect(saver, grace=timedelta(0))
        assert set(pruned.swept_keys) == {chunk_key(d) for d in set(old) - set(new)}
        found = await saver.aget_tuple(config("t"))
        assert found is not None and found.checkpoint["channel_values"]["x"] == history(201)

        await saver.adelete_thread("t")
        await saver.aflush()
        deleted = await collect(saver, grace=timedelta(0))
        assert set(deleted.swept_keys) == {chunk_key(d) for d in new}
        other = await saver.aget_tuple(config("other"))
        assert other is not None and other.checkpoint["channel_values"]["x"] == history(150, 3)


async def test_gc_gives_chunks_refresh_after_beyond_its_grace(
    local: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = chunked(local)  # refresh_after: 15 minutes
    async with saver_of("postgres", redis_url, pg_dsn, redis_prefix, offload=offload) as saver:
        await put_value(saver, "t", history(100))
        await saver.adelete_thread("t")
        count = len(chunk_objects(offload))
        # a put may skip a chunk modified 14 minutes ago: gc must not take it
        fourteen = time.time() - 14 * 60
        for found in offload.objects():
            os.utime(Path(offload.local_dir or "") / found.key, (fourteen, fourteen))
        young = await collect(saver, grace=timedelta(0))
        assert young.swept == 0 and young.kept_young == count
        older = time.time() - 16 * 60
        for found in offload.objects():
            os.utime(Path(offload.local_dir or "") / found.key, (older, older))
        assert (await collect(saver, grace=timedelta(0))).swept == count


@pytest.mark.parametrize("mode", ["write_behind", "write_through"])
async def test_a_crash_after_the_chunks_leaves_them_whole_and_gc_collects_them(
    mode: str, location: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = chunked(location, refresh_after=timedelta(0))
    async with saver_of(f"dual_{mode}", redis_url, pg_dsn, redis_prefix, offload=offload) as saver:
        args = {"url": location.url, "options": location.options, "redis": redis_url,
                "pg": pg_dsn, "prefix": redis_prefix, "mode": mode, "chunks": CHUNK}  # fmt: skip
        child = subprocess.run(
            [sys.executable, "-c", CRASHING_PUT, json.dumps(args)], timeout=120, check=False
        )
        assert child.returncode == -signal.SIGKILL

        orphans = chunk_objects(offload)
        assert len(orphans) >= 3  # channel a's 100,000 bytes, cut
        parts = offload.get_chunks(sorted(orphans))
        assert all(
            p is not None and hashlib.sha256(p).hexdigest() == d
            for p, d in zip(parts, sorted(orphans), strict=True)
        )  # each whole and durable
        assert sum(len(p or b"") for p in parts) >= 100_000  # random bytes: stored raw
        assert await saver.aget_tuple(config("crash")) is None
        assert await fetch(pg_dsn, "SELECT 1 FROM dualsaver_blobs") == []
        swept = await collect(saver, grace=timedelta(0))
        assert swept.marked == 0 and swept.swept == len(orphans)
        assert list(offload.objects()) == []


@pytest.mark.pure
def test_chunk_settings_are_checked(tmp_path: Path) -> None:
    directory = (tmp_path / "o").as_uri()
    for bad in (0, 100, 1 << 30, True, "16k"):
        with pytest.raises(ConfigurationError, match="chunk_bytes"):
            Offload(directory, chunk_bytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="refresh_after"):
        Offload(directory, refresh_after=timedelta(seconds=-1))
    assert Offload(directory).chunk_bytes == CHUNK


async def test_gc_keeps_the_chunks_of_a_record_only_queued_in_the_outbox(
    location: Location, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    offload = chunked(location, refresh_after=timedelta(0))
    async with saver_of(
        "dual_write_behind", redis_url, pg_dsn, redis_prefix, offload=offload
    ) as saver:
        assert isinstance(saver, DualSaver)
        await saver.aput(config("queued"), checkpoint(history(120), 1), {"step": 0}, {"x": 1})
        await evict_from_redis(saver, redis_url, "queued")  # only the outbox entry is left
        assert await fetch(pg_dsn, "SELECT 1 FROM dualsaver_blobs") == []
        chunks = set(chunk_objects(offload))
        assert len(chunks) >= 5

        report = await collect(saver, grace=timedelta(0))
        assert report.marked == len(chunks) and report.swept == 0
        assert set(chunk_objects(offload)) == chunks

        await saver.aflush()
        fresh = chunked(location)  # read back by another process, every chunk fetched
        async with saver_of(
            "dual_write_behind", redis_url, pg_dsn, redis_prefix, offload=fresh
        ) as reader:
            found = await reader.aget_tuple(config("queued"))
            assert found is not None and found.checkpoint["channel_values"]["x"] == history(120)
