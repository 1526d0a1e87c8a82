"""Restart detection on Redis Cluster checks every master: whichever master comes back
from an old snapshot (SAVE, more writes, SIGKILL, restart on that RDB), the chain serves
PostgreSQL's latest of its threads, never the stale one the snapshot holds. A replica
promoted in a failover counts as a restart too: it may lack the last acknowledged writes.

One three-master cluster for the module (tests/cluster.py), stopped by PID however the
tests end; the failover test breaks a cluster of its own. Each test has its own prefix
and PostgreSQL database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from langchain_core.runnables import RunnableConfig

from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.embedded import EmbeddedValkey
from langgraph_dualsaver.hot.saver import RedisHotSaver
from tests.cluster import (
    replica_of,
    replication_cut,
    restart_from_snapshot,
    snapshot,
    take_over,
    valkey_cluster,
    wait_caught_up,
)
from tests.helpers import config, put_chain

MASTERS = 3
THREADS_PER_MASTER = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[EmbeddedValkey]]:
    with valkey_cluster(masters=MASTERS) as nodes:
        yield nodes


def cluster_url(nodes: list[EmbeddedValkey]) -> str:
    return nodes[0].url.replace("redis://", "redis+cluster://", 1)


async def threads_by_master(
    hot: RedisHotSaver, nodes: list[EmbeddedValkey]
) -> dict[int, list[str]]:
    """``THREADS_PER_MASTER`` thread ids whose keys live on each master (by index)."""
    client = await hot.aclient()
    index = {node.port: i for i, node in enumerate(nodes)}
    found: dict[int, list[str]] = {i: [] for i in range(len(nodes))}
    for n in range(10_000):
        thread = f"thread-{n}"
        owner = found[index[client.get_node_from_key(hot.thread_keys(thread).meta).port]]
        if len(owner) < THREADS_PER_MASTER:
            owner.append(thread)
        if all(len(threads) == THREADS_PER_MASTER for threads in found.values()):
            return found
    raise AssertionError(f"threads did not spread over every master: {found}")


async def latest_of(saver: DualSaver | RedisHotSaver, thread: str) -> RunnableConfig | None:
    found = await saver.aget_tuple(config(thread))
    return None if found is None else found.config


async def test_hot_identity_is_new_then_same_then_changed_after_any_master_restarts(
    cluster: list[EmbeddedValkey],
) -> None:
    url = cluster_url(cluster)
    async with RedisHotSaver.from_conn_string(url, prefix=f"id-{uuid.uuid4().hex[:8]}") as hot:
        await hot.asetup()
        assert await hot.aserver_identity() == "new"
        await hot.arecord_server_identity()
        assert await hot.aserver_identity() == "same"
        for node in cluster:  # each master in turn, the last one too
            snapshot(node)  # holds the record: only the run_id tells the restart
            restart_from_snapshot(node, cluster)
            assert await hot.aserver_identity() == "changed"
            await hot.arecord_server_identity()
            assert await hot.aserver_identity() == "same"


async def test_a_record_is_not_taken_for_a_master_restarted_after_the_check(
    cluster: list[EmbeddedValkey],
) -> None:
    url = cluster_url(cluster)
    async with RedisHotSaver.from_conn_string(url, prefix=f"cas-{uuid.uuid4().hex[:8]}") as hot:
        await hot.asetup()
        await hot.arecord_server_identity()
        assert await hot.aserver_identity() == "same"  # the masters the record is for
        restart_from_snapshot(cluster[-1], cluster)  # restarts between check and record
        await hot.arecord_server_identity()
        assert await hot.aserver_identity() == "changed"


@pytest.mark.parametrize("master", range(MASTERS), ids=lambda m: f"master{m}")
async def test_a_master_back_from_an_old_snapshot_serves_no_stale_latest(
    cluster: list[EmbeddedValkey], pg_dsn: str, master: int
) -> None:
    url = cluster_url(cluster)
    prefix = f"snap-{uuid.uuid4().hex[:8]}"
    async with DualSaver.from_conn_string(
        url, pg_dsn, prefix=prefix, mode="write_through", background_flush=False
    ) as saver:
        await saver.asetup()
        threads = await threads_by_master(saver.hot, cluster)
        every = [thread for owned in threads.values() for thread in owned]
        first = {t: (await put_chain(saver, t, 1))[0] for t in every}
        snapshot(cluster[master])  # the snapshot this master will come back from
        second = {t: (await put_chain(saver, t, 1, start=first[t]))[0] for t in every}
        restart_from_snapshot(cluster[master], cluster)

        async with RedisHotSaver.from_conn_string(url, prefix=prefix, outbox=True) as raw:
            for thread in every:  # a plain look: that master's latest is the stale one
                stale = thread in threads[master]
                assert await latest_of(raw, thread) == (first if stale else second)[thread]
        for thread in every:
            assert await latest_of(saver, thread) == second[thread]


async def test_a_replica_promoted_without_the_last_writes_serves_no_stale_latest(
    pg_dsn: str,
) -> None:
    with valkey_cluster(masters=MASTERS) as nodes, replica_of(nodes[1]) as replica:
        url = cluster_url(nodes)
        prefix = f"failover-{uuid.uuid4().hex[:8]}"
        async with DualSaver.from_conn_string(
            url, pg_dsn, prefix=prefix, mode="write_through", background_flush=False
        ) as saver:
            await saver.asetup()
            threads = await threads_by_master(saver.hot, nodes)
            every = [thread for owned in threads.values() for thread in owned]
            first = {t: (await put_chain(saver, t, 1))[0] for t in every}
            wait_caught_up(nodes[1], replica)
            with replication_cut(nodes[1], replica):  # the replica misses these writes
                second = {t: (await put_chain(saver, t, 1, start=first[t]))[0] for t in every}
                nodes[1].kill()
            take_over(replica, [nodes[0], nodes[2], replica])

            async with RedisHotSaver.from_conn_string(url, prefix=prefix, outbox=True) as raw:
                for thread in every:  # a plain look: the promoted replica's latest is stale
                    stale = thread in threads[1]
                    assert await latest_of(raw, thread) == (first if stale else second)[thread]
            for thread in every:
                assert await latest_of(saver, thread) == second[thread]
