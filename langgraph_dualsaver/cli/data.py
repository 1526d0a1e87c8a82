"""Queries the commands share: which threads exist, in which tier, and their latest step.

Everything here reads; nothing backfills or flushes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from langgraph_dualsaver.hot.listing import registry_members

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import CheckpointTuple

    from langgraph_dualsaver.chain.saver import DualSaver

__all__ = ["ThreadRow", "hot_thread_ids", "list_threads", "thread_presence"]

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ThreadRow:
    """One line of ``dualsaver threads``."""

    thread_id: str
    checkpoint_id: str
    step: int | None
    created_at: datetime | None
    checkpoints: int
    tier: str
    """``hot`` (Redis only), ``durable`` (PostgreSQL only) or ``both``."""


async def hot_thread_ids(saver: DualSaver) -> list[str]:
    """Threads that have keys in Redis, most recently written first.

    Read from the shards' registries; members whose keys expired are left out (the hot
    tier forgets them lazily).
    """
    hot = saver.hot
    client = await hot.aclient()
    ids = [thread_id for thread_id, _ in await registry_members(hot)]
    live = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        async with client.pipeline(transaction=False) as pipe:
            for thread_id in chunk:
                pipe.exists(hot.thread_keys(thread_id).meta)
            found = await pipe.execute()
        live += [t for t, alive in zip(chunk, found, strict=True) if alive]
    return live


async def thread_presence(saver: DualSaver, thread_id: str) -> dict[str, int]:
    """Checkpoints the thread has in each tier: ``{"hot": n, "durable": m}``."""
    hot = await saver.hot.athread_info(thread_id)
    durable = await saver.durable.athread_info(thread_id)
    return {"hot": int(hot["checkpoints"]), "durable": int(durable["checkpoints"])}


def _tier(hot: bool, durable: bool) -> str:
    return "both" if hot and durable else "hot" if hot else "durable"


def _ts(item: CheckpointTuple) -> datetime | None:
    text = item.checkpoint.get("ts")
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


async def _hot_latest(saver: DualSaver, thread_id: str) -> CheckpointTuple | None:
    config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    return await saver.hot.aget_tuple(config)


async def list_threads(
    saver: DualSaver, *, limit: int, filter: Mapping[str, Any] | None = None
) -> list[ThreadRow]:
    """The ``limit`` most recently written threads of both tiers, newest first.

    ``filter`` is matched against each thread's latest root checkpoint, in PostgreSQL
    as JSONB containment and in Redis with the same rule (``records.metadata_matches``).
    A thread's latest step is Redis' when it is hot (Redis has every recent write).
    """
    from langgraph_dualsaver.records import metadata_matches

    durable = await saver.durable.athreads(limit=limit, filter=dict(filter or {}) or None)
    hot_ids = await hot_thread_ids(saver)
    hot_set = set(hot_ids)
    rows: dict[str, ThreadRow] = {}
    for summary in durable:
        rows[summary.thread_id] = ThreadRow(
            thread_id=summary.thread_id,
            checkpoint_id=summary.checkpoint_id,
            step=summary.step,
            created_at=summary.created_at,
            checkpoints=summary.checkpoints,
            tier=_tier(summary.thread_id in hot_set, True),
        )
    hot_rows = 0
    for thread_id in hot_ids:
        if hot_rows >= limit:
            break
        latest = await _hot_latest(saver, thread_id)
        if latest is None or not metadata_matches(latest.metadata or {}, filter):
            continue
        hot_rows += 1
        known = rows.get(thread_id)
        if known is None:
            durable_count = (await saver.durable.athread_info(thread_id))["checkpoints"]
            hot_count = (await saver.hot.athread_info(thread_id))["checkpoints"]
            tier = _tier(True, durable_count > 0)
            count = max(durable_count, hot_count)
        else:
            tier, count = known.tier, known.checkpoints
        step = (latest.metadata or {}).get("step")
        rows[thread_id] = ThreadRow(
            thread_id=thread_id,
            checkpoint_id=latest.config["configurable"]["checkpoint_id"],
            step=step if isinstance(step, int) else None,
            created_at=_ts(latest) or (known.created_at if known else None),
            checkpoints=count,
            tier=tier,
        )
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    ordered = sorted(rows.values(), key=lambda r: (r.created_at or epoch, r.thread_id))
    return list(reversed(ordered))[:limit]
