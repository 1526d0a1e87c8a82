"""One way to open every saver the contract and graph tests run against."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

SAVER_KINDS = ["postgres", "redis", "dual_write_behind", "dual_write_through"]


@asynccontextmanager
async def open_saver(
    kind: str, *, redis_url: str, pg_dsn: str, prefix: str, **options: Any
) -> AsyncIterator[BaseCheckpointSaver]:
    """An open, set-up saver of ``kind``; closed on exit."""
    if kind == "postgres":
        from langgraph_dualsaver.durable.saver import PostgresDurableSaver

        async with PostgresDurableSaver.from_conn_string(pg_dsn, **options) as saver:
            await saver.asetup()
            yield saver
    elif kind == "redis":
        from langgraph_dualsaver.hot.saver import RedisHotSaver

        async with RedisHotSaver.from_conn_string(redis_url, prefix=prefix, **options) as saver:
            await saver.asetup()
            yield saver
    elif kind.startswith("dual_"):
        from langgraph_dualsaver.chain.saver import DualSaver

        mode = kind.removeprefix("dual_")
        async with DualSaver.from_conn_string(
            redis_url, pg_dsn, mode=mode, prefix=prefix, **options
        ) as saver:
            await saver.asetup()
            yield saver
    else:
        raise ValueError(f"unknown saver kind {kind!r}")
