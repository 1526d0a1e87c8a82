"""put, put_writes and get_tuple of the latest checkpoint cost one round trip each.

The client's connections count what they send: every round trip starts with one
``send_packed_command`` (a pipeline sends all its commands in one). The replies are
real; nothing is mocked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection

from langgraph_dualsaver.hot.saver import RedisHotSaver


class CountingConnection(Connection):
    """A connection that counts its sends: one per round trip."""

    sent: list[int] = [0]  # shared on purpose: reset by each measurement

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent[0] += 1
        await super().send_packed_command(command, check_health)


MODES = {
    "plain": {},
    "ttl_and_refresh_on_read": {"ttl": timedelta(minutes=5), "refresh_on_read": True},
    "outbox": {"outbox": True, "ttl": timedelta(minutes=5)},
}


@pytest.fixture(params=list(MODES))
async def saver(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
) -> AsyncIterator[RedisHotSaver]:
    pool = ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = Redis(connection_pool=pool)
    saver = RedisHotSaver(client, prefix=redis_prefix, **MODES[request.param])
    await saver.asetup()
    try:
        yield saver
    finally:
        await saver.aclose()
        await client.aclose()


class Trips:
    def __enter__(self) -> Trips:
        CountingConnection.sent[0] = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.count = CountingConnection.sent[0]


def checkpoint(values: dict[str, Any], versions: dict[str, str]) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    return cp


async def test_each_call_on_the_request_path_is_one_round_trip(saver: RedisHotSaver) -> None:
    thread = {"configurable": {"thread_id": "trips", "checkpoint_ns": ""}}
    # Warm up: the connection's handshake is not part of any call.
    parent = await saver.aput(thread, checkpoint({"a": 0}, {"a": "1"}), {"step": -1}, {"a": "1"})
    for step in range(20):  # a thread with some history: the latest is still one lookup
        config = {"configurable": {**parent["configurable"]}}
        values, versions = {"a": step, "b": [step]}, {"a": f"{step + 2}", "b": f"{step + 2}"}
        with Trips() as put:
            parent = await saver.aput(
                config, checkpoint(values, versions), {"step": step}, versions
            )
        assert put.count == 1

    with Trips() as put_writes:
        await saver.aput_writes(parent, [("a", 99), ("b", [1, 2])], "task-1", "path")
    assert put_writes.count == 1

    with Trips() as get_latest:
        latest = await saver.aget_tuple(thread)
    assert get_latest.count == 1
    assert latest is not None
    assert latest.config["configurable"]["checkpoint_id"] == parent["configurable"]["checkpoint_id"]
    assert latest.checkpoint["channel_values"] == {"a": 19, "b": [19]}
    assert latest.pending_writes == [("task-1", "a", 99), ("task-1", "b", [1, 2])]
    assert latest.parent_config is not None

    with Trips() as get_by_id:
        same = await saver.aget_tuple(parent)
    assert get_by_id.count == 1
    assert same == latest
