"""``checkpointer()``: a ``DualSaver`` for LangGraph's Agent Server (``langgraph dev``,
``langgraph up``, a deployment).

Point ``langgraph.json`` at it through a file of the project::

    # checkpointer.py
    from langgraph_dualsaver.server import checkpointer

    # langgraph.json
    {"checkpointer": {"path": "./checkpointer.py:checkpointer"}, ...}

The server enters the context manager once at start-up and leaves it at shut-down. It
reads the environment as ``DualSaver.from_env()`` does (``DUALSAVER_REDIS_URL``,
``DUALSAVER_POSTGRES_URL``, ``DUALSAVER_MODE``, ``DUALSAVER_PREFIX``,
``DUALSAVER_SCHEMA``, ``DUALSAVER_OUTBOX_KEY``); where a URL is unset it starts the
embedded servers, and stops on exit those it started.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.redact import redact

if TYPE_CHECKING:
    from langgraph_dualsaver.embedded import SharedServers

__all__ = ["checkpointer"]

logger = logging.getLogger(__name__)

REDIS_URL_VAR = "DUALSAVER_REDIS_URL"
POSTGRES_URL_VAR = "DUALSAVER_POSTGRES_URL"


@asynccontextmanager
async def checkpointer(**options: Any) -> AsyncIterator[DualSaver]:
    """Open and set up a ``DualSaver`` from the environment, yield it, then close it
    (after a last flush) and stop the embedded servers this call started.

    ``options`` go to ``DualSaver.from_env`` (``mode=``, ``max_lag=``, ``ttl=``, ...);
    the Agent Server passes none.
    """
    servers = await asyncio.to_thread(_embedded_servers_if_needed)
    try:
        saver = await asyncio.to_thread(DualSaver.from_env, setup=False, **options)
        async with saver:
            await saver.asetup()
            logger.info("DualSaver checkpointer open: %s", _describe(saver, servers))
            yield saver
        logger.info("DualSaver checkpointer closed: %s", _describe(saver, servers))
    finally:
        if servers is not None:
            await asyncio.to_thread(servers.stop)


def _embedded_servers_if_needed() -> SharedServers | None:
    """The embedded servers when a URL is unset (started, or found running), else None."""
    if os.environ.get(REDIS_URL_VAR) and os.environ.get(POSTGRES_URL_VAR):
        return None
    from langgraph_dualsaver.embedded import shared_servers

    return shared_servers()


def _describe(saver: DualSaver, servers: SharedServers | None) -> str:
    """Mode, prefix, schema and the two URLs without their credentials."""
    redis_url = os.environ.get(REDIS_URL_VAR) or (servers.redis_url if servers else "")
    postgres_url = os.environ.get(POSTGRES_URL_VAR) or (servers.postgres_url if servers else "")
    return (
        f"mode={saver.mode} prefix={saver.hot.prefix} schema={saver.durable.schema or 'public'} "
        f"redis={redact(redis_url)} postgres={redact(postgres_url)}"
    )
