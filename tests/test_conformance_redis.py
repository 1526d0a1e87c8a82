"""The public conformance suite (langgraph-checkpoint-conformance) on RedisHotSaver: on
the embedded Valkey, and on a real three-master Redis Cluster started by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from redis.asyncio.cluster import RedisCluster

from langgraph_dualsaver.redis import RedisHotSaver
from tests.cluster import valkey_cluster

# The suite's size in langgraph-checkpoint-conformance 0.0.2: put 17, put_writes 10,
# get_tuple 10, list 16, delete_thread 5, delete_for_runs 7, copy_thread 8, prune 8.
EXPECTED_TESTS = 81


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    with valkey_cluster(masters=3) as nodes:
        yield nodes[0].url


async def _conformance(name: str, open_saver) -> None:  # type: ignore[no-untyped-def]
    @checkpointer_test(name=name)
    async def factory() -> AsyncIterator[RedisHotSaver]:
        async with open_saver() as saver:
            await saver.asetup()
            yield saver

    report = await validate(factory)
    report.print_report()
    passed = sum(r.tests_passed for r in report.results.values())
    failed = sum(r.tests_failed for r in report.results.values())
    print(f"conformance: {passed} passed, {failed} failed, level {report.conformance_level()}")

    assert set(report.results) == {c.value for c in ALL_CAPABILITIES}
    failures = {cap: r.failures for cap, r in report.results.items() if not r.passed}
    assert not failures, failures
    assert all(r.detected and r.passed for r in report.results.values())
    assert report.conformance_level() == "FULL"
    assert (passed, failed) == (EXPECTED_TESTS, 0)


async def test_every_capability_on_valkey(redis_url: str, redis_prefix: str) -> None:
    await _conformance(
        "RedisHotSaver", lambda: RedisHotSaver.from_conn_string(redis_url, prefix=redis_prefix)
    )


async def test_every_capability_on_a_three_master_cluster(cluster_url: str) -> None:
    client = RedisCluster.from_url(cluster_url)
    try:
        info = await client.cluster_info()
        assert info["cluster_state"] == "ok" and int(info["cluster_size"]) == 3
        await _conformance(
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
        await _conformance(
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
