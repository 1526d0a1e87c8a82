"""A master of a replicated Redis Cluster is SIGKILLed while every thread keeps writing,
and the cluster promotes its replica by itself: no checkpoint the chain acknowledged is
lost, in either mode. Each is readable from the chain afterwards and in PostgreSQL after
a flush; the chain goes back to Redis by itself once the replica serves; the outbox
drains.

Replication is asynchronous, so a master can acknowledge a write its replica never gets.
The second test makes that certain instead of a race: the replica is paused and cut off
(tests/cluster.replication_cut) when the master dies, and no flusher runs meanwhile.

Three masters with one replica each (``valkey-cli --cluster create``, node timeout 2 s),
started for each test and stopped by PID however it ends (tests/cluster.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from langchain_core.runnables import RunnableConfig
from redis import exceptions as rex
from redis.asyncio.connection import Connection

from langgraph_dualsaver.chain.saver import MODES, DualSaver, Mode
from langgraph_dualsaver.embedded import EmbeddedValkey
from langgraph_dualsaver.errors import DualSaverError, StoreUnavailableError
from langgraph_dualsaver.hot.saver import RedisHotSaver
from langgraph_dualsaver.hot.scripts import stored_entry_ids
from tests.cluster import Shard, replicated_cluster, replication_cut, wait_promoted
from tests.helpers import checkpoint, config, durable_ids, eventually, put_chain

MASTERS = 3
THREADS_PER_MASTER = 8
STEP_S = 0.1
"""Each thread writes a step this often: puts are in flight on every master when the
kill lands, and through the seconds the promotion takes."""
DEADLINE_S = 30.0


@pytest.fixture
def shards() -> Iterator[list[Shard]]:
    with replicated_cluster(masters=MASTERS, node_timeout_ms=2000) as shards:
        yield shards


@dataclass
class Writer:
    """One thread's steps: every put the chain acknowledged (and when, on the monotonic
    clock), and every one it refused."""

    thread: str
    parent: RunnableConfig
    acked: list[RunnableConfig] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def ids(self) -> list[str]:
        return [saved["configurable"]["checkpoint_id"] for saved in self.acked]

    def when(self, checkpoint_id: str, killed_at: float) -> str:
        at = self.acked_at[self.ids().index(checkpoint_id)] - killed_at
        return f"{self.thread}/{checkpoint_id}, acknowledged {at:+.3f}s after the kill"


@dataclass
class Failover:
    """The cluster, the chain on it, and the master to kill."""

    shards: list[Shard]
    saver: DualSaver
    url: str
    prefix: str
    pg_dsn: str

    @property
    def victim(self) -> Shard:
        return self.shards[1]

    def live(self) -> list[EmbeddedValkey]:
        nodes = [n for s in self.shards for n in (s.master, s.replica)]
        return [n for n in nodes if n is not self.victim.master]


async def threads_by_master(hot: RedisHotSaver, masters: list[EmbeddedValkey]) -> list[str]:
    """``THREADS_PER_MASTER`` thread ids on each master, in master order."""
    client = await hot.aclient()
    found: dict[int, list[str]] = {m.port: [] for m in masters}
    for n in range(10_000):
        thread = f"thread-{n}"
        owned = found[client.get_node_from_key(hot.thread_keys(thread).meta).port]
        if len(owned) < THREADS_PER_MASTER:
            owned.append(thread)
        if all(len(t) == THREADS_PER_MASTER for t in found.values()):
            return [t for m in masters for t in found[m.port]]
    raise AssertionError(f"threads did not spread over every master: {found}")


async def pace(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds`` between steps, or less if ``stop`` is set."""
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


async def keep_writing(saver: DualSaver, writer: Writer, stop: asyncio.Event) -> None:
    """A step every ``STEP_S`` until ``stop``, each the child of the last acknowledged."""
    step = 100
    while not stop.is_set():
        step += 1
        try:
            saved = await saver.aput(
                writer.parent, checkpoint(f"s{step}", step), {"step": step}, {"x": step}
            )
        except DualSaverError as exc:
            writer.errors.append(repr(exc))
        else:
            writer.acked.append(saved)
            writer.acked_at.append(time.monotonic())
            writer.parent = saved
        await pace(stop, STEP_S)


async def every_writer_steps(writers: list[Writer], steps: int) -> None:
    """Return once every writer has had ``steps`` more puts acknowledged."""
    targets = {w.thread: len(w.acked) + steps for w in writers}

    async def done() -> bool:
        return all(len(w.acked) >= targets[w.thread] for w in writers)

    await eventually(done, DEADLINE_S, f"every writer to take {steps} more steps")


async def back_on_redis(saver: DualSaver, writers: list[Writer]) -> None:
    """Return once a round of steps on every thread went to Redis, none degraded."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        before = (await saver.astats()).degraded_writes
        await every_writer_steps(writers, 2)
        stats = await saver.astats()
        if stats.redis_available and stats.degraded_writes == before:
            return
    raise AssertionError(f"the chain did not go back to Redis within {DEADLINE_S}s")


async def kill_victim(run: Failover, writers: list[Writer], *, replica_lags: bool) -> float:
    """SIGKILL the victim master while the writers write; with ``replica_lags``, while
    its replica is paused and cut off, after every writer took two steps more. Returns
    when the kill was sent, on the monotonic clock."""
    victim = run.victim
    if not replica_lags:
        killed_at = time.monotonic()
        await asyncio.to_thread(victim.master.kill)
        return killed_at
    with replication_cut(victim.master, victim.replica):
        await every_writer_steps(writers, 2)
        killed_at = time.monotonic()
        await asyncio.to_thread(victim.master.kill)
    return killed_at


async def write_through_the_failover(run: Failover, *, replica_lags: bool) -> None:
    """Three flushed steps on every thread, then steps every ``STEP_S`` while a master
    dies and its replica is promoted, until the chain writes Redis again; then check
    that every acknowledged checkpoint survived."""
    saver = run.saver
    threads = await threads_by_master(saver.hot, [s.master for s in run.shards])
    writers = [Writer(t, (await put_chain(saver, t, 3))[-1]) for t in threads]
    await saver.aflush()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(keep_writing(saver, w, stop)) for w in writers]
    try:
        await every_writer_steps(writers, 3)
        killed_at = await kill_victim(run, writers, replica_lags=replica_lags)
        await asyncio.to_thread(wait_promoted, run.victim.replica, run.live())
        await back_on_redis(saver, writers)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert [e for w in writers for e in w.errors] == []
    await outbox_drains(saver)
    await assert_hot_again(run, writers)
    await assert_every_acknowledged_checkpoint_kept(run, writers, killed_at)


async def outbox_drains(saver: DualSaver) -> None:
    if not saver.background_flush:
        await saver.aflush()

    async def drained() -> bool:
        return (await saver.astats()).outbox_length == 0

    await eventually(drained, DEADLINE_S, "the outbox to drain")


async def assert_hot_again(run: Failover, writers: list[Writer]) -> None:
    """Redis itself holds each thread's last step: the chain went back to it."""
    async with RedisHotSaver.from_conn_string(run.url, prefix=run.prefix) as raw:
        for w in writers:
            found = await raw.aget_tuple(config(w.thread))
            assert found is not None, w.thread
            assert found.config["configurable"]["checkpoint_id"] == w.ids()[-1], w.thread


async def assert_every_acknowledged_checkpoint_kept(
    run: Failover, writers: list[Writer], killed_at: float
) -> None:
    unreadable = []
    for w in writers:
        for saved in w.acked:
            found = await run.saver.aget_tuple(saved)
            if found is None or found.config["configurable"] != saved["configurable"]:
                unreadable.append(w.when(saved["configurable"]["checkpoint_id"], killed_at))
    assert unreadable == []
    await run.saver.aflush()
    not_durable = []
    for w in writers:
        durable = set(await durable_ids(run.pg_dsn, w.thread))
        not_durable += [w.when(i, killed_at) for i in w.ids() if i not in durable]
    assert not_durable == []


async def run_failover(
    shards: list[Shard], pg_dsn: str, mode: Mode, *, replica_lags: bool, background_flush: bool
) -> None:
    url = shards[0].master.url.replace("redis://", "redis+cluster://", 1)
    prefix = f"failover-{uuid.uuid4().hex[:8]}"
    async with DualSaver.from_conn_string(
        url, pg_dsn, mode=mode, prefix=prefix, background_flush=background_flush
    ) as saver:
        await saver.asetup()
        run = Failover(shards, saver, url, prefix, pg_dsn)
        await write_through_the_failover(run, replica_lags=replica_lags)


@pytest.mark.parametrize("mode", MODES)
async def test_no_acknowledged_checkpoint_is_lost_when_a_master_dies_mid_run(
    shards: list[Shard], pg_dsn: str, mode: Mode
) -> None:
    await run_failover(shards, pg_dsn, mode, replica_lags=False, background_flush=True)


async def test_a_write_the_replica_did_not_get_is_never_acknowledged_from_redis_alone(
    shards: list[Shard], pg_dsn: str
) -> None:
    """write_behind, its flush workers behind: while the replica lags, a put waits for
    it and then goes to PostgreSQL, so the promoted replica lacks nothing acknowledged."""
    await run_failover(shards, pg_dsn, "write_behind", replica_lags=True, background_flush=False)


def test_a_cluster_in_transition_is_unavailable_not_a_fault() -> None:
    """CLUSTERDOWN, TRYAGAIN, MOVED, READONLY (they subclass ResponseError): the chain
    falls back to PostgreSQL on them as on a connection error."""
    saver = RedisHotSaver(url="redis+cluster://127.0.0.1:1", outbox=True)
    answers = [
        rex.ClusterDownError("CLUSTERDOWN The cluster is down"),
        rex.MasterDownError("MASTERDOWN Link with MASTER is down"),
        rex.TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        rex.MovedError("1 127.0.0.1:2"),
        rex.ReadOnlyError("READONLY You can't write against a read only replica."),
        rex.ClusterError("TTL exhausted."),
    ]
    for answer in answers:
        with pytest.raises(StoreUnavailableError), saver.conn.errors():
            raise answer


async def test_a_client_broken_under_a_call_is_unavailable_and_our_own_bugs_stay_bugs() -> None:
    """redis-py's cluster client disconnects connections in use when it reacts to a
    failover; the call on one then fails inside redis-py (here: a connection with no
    socket). That is an outage to fall back from; the same error from this package's
    own code is a bug, and is not hidden."""
    saver = RedisHotSaver(url="redis+cluster://127.0.0.1:1", outbox=True)
    closed = Connection(host="127.0.0.1", port=1)
    with pytest.raises(StoreUnavailableError), saver.conn.errors():
        await closed._send_packed_command([b"PING"])
    with pytest.raises(AttributeError), saver.conn.errors():
        _ = closed.no_such_attribute  # type: ignore[attr-defined]


def test_a_write_reply_that_is_not_one_entry_id_per_record_is_not_taken_for_a_write() -> None:
    assert stored_entry_ids([b"1733-0"], 1, "here") == ["1733-0"]
    assert stored_entry_ids([], 0, "here") == []
    for reply in ([], [b"1733-0", b"1733-1"], None, 1, [b"OK"], [rex.ConnectionError()]):
        with pytest.raises(StoreUnavailableError, match="redis at here answered a write"):
            stored_entry_ids(reply, 1, "here")
