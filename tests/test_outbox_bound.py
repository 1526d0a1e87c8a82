"""``max_lag`` bounds the shared outbox, whatever the number of processes writing to it:
the bound is checked in the same script as the write, per outbox shard."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from langgraph_dualsaver import DualSaver, StoreUnavailableError
from langgraph_dualsaver.embedded import EmbeddedPostgres
from tests.helpers import checkpoint, config, durable_ids
from tests.servers import postgres_server

SAVERS = 4
MAX_LAG = 48  # 3 entries on each of the 16 outbox shards


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    with postgres_server() as server:
        yield server


async def write_until_refused(saver: DualSaver, threads: list[str]) -> list[str]:
    """Put one checkpoint on each thread; return the threads whose put was accepted."""
    accepted = []
    for thread in threads:
        try:
            await saver.aput(config(thread), checkpoint("v", 1), {}, {"x": 1})
        except StoreUnavailableError:
            continue
        accepted.append(thread)
    return accepted


async def test_savers_of_four_processes_share_one_max_lag_while_postgres_is_down(
    redis_url: str, redis_prefix: str, postgres: EmbeddedPostgres
) -> None:
    options = {"prefix": redis_prefix, "max_lag": MAX_LAG, "background_flush": False}
    savers = [
        DualSaver.from_conn_string(redis_url, postgres.url, **options) for _ in range(SAVERS)
    ]
    try:
        for saver in savers:
            await saver.asetup()
        postgres.stop()
        threads = [[f"lag-{n}-{uuid.uuid4()}" for _ in range(40)] for n in range(SAVERS)]
        accepted = await asyncio.gather(
            *(write_until_refused(saver, mine) for saver, mine in zip(savers, threads, strict=True))
        )
        queued = await savers[0].alag()
        assert queued == sum(map(len, accepted))  # every accepted put is queued
        assert queued <= MAX_LAG  # not SAVERS x MAX_LAG
        assert sum(map(len, threads)) - queued > 0  # the bound was reached and refused puts
        postgres.start()
        await savers[0].aflush()
        for thread in (t for mine in accepted for t in mine):
            assert len(await durable_ids(postgres.url, thread)) == 1
    finally:
        for saver in savers:
            await saver.aclose()
