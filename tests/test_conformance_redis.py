"""The public conformance suite (langgraph-checkpoint-conformance) on RedisHotSaver: on
the embedded Valkey, and on a real three-master Redis Cluster started by the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

from langgraph_dualsaver.hot.saver import RedisHotSaver
from tests.cluster import valkey_cluster
from tests.conformance import assert_full_conformance


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    with valkey_cluster(masters=3) as nodes:
        yield nodes[0].url


@pytest.mark.parametrize("exclusive_runs", [False, True])
async def test_every_capability_on_valkey(
    redis_url: str, redis_prefix: str, exclusive_runs: bool
) -> None:
    await assert_full_conformance(
        f"RedisHotSaver(exclusive_runs={exclusive_runs})",
        lambda: RedisHotSaver.from_conn_string(
            redis_url, prefix=redis_prefix, exclusive_runs=exclusive_runs
        ),
    )


async def test_every_capability_on_a_three_master_cluster(cluster_url: str) -> None:
    client = RedisCluster.from_url(cluster_url)
    try:
        info = await client.cluster_info()
        assert info["cluster_state"] == "ok" and int(info["cluster_size"]) == 3
        await assert_full_conformance(
            "RedisHotSaver on Redis Cluster",
            lambda: RedisHotSaver.from_conn_string(cluster_url, cluster=True, prefix="conf"),
        )
        # The threads really were spread over the masters: every node holds keys.
        primaries = client.get_primaries()
        sizes = [await client.dbsize(target_nodes=node) for node in primaries]
        assert len(sizes) == 3 and all(n > 0 for n in sizes), sizes
    finally:
        await client.aclose()


async def test_caller_owned_cluster_client_is_used_and_left_open(cluster_url: str) -> None:
    client = RedisCluster.from_url(cluster_url)
    try:
        await assert_full_conformance(
            "RedisHotSaver on a caller's RedisCluster", lambda: _OwnedClientSaver(client)
        )
        assert await client.ping()
    finally:
        await client.aclose()


class _OwnedClientSaver:
    """An async context manager around a saver on a caller-owned client."""

    def __init__(self, client: RedisCluster) -> None:
        self.saver = RedisHotSaver(client, prefix="owned")

    async def __aenter__(self) -> RedisHotSaver:
        return self.saver

    async def __aexit__(self, *exc: object) -> None:
        await self.saver.aclose()
