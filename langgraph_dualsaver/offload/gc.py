"""``dualsaver gc``: mark-and-sweep of the offload store.

Marks, in this order: every reference in the Redis outbox and dead-letter streams
(records not yet in PostgreSQL), in the hot tier's threads, then in PostgreSQL's values
and writes. Outbox before PostgreSQL: a record flushed while gc runs is in the outbox
when gc reads it there, or in PostgreSQL when it reads that. References are found in
the raw bytes (``sha256:<hex>:<size>``), so nothing is decoded; a look-alike in a
user's value only keeps an object longer.

Sweep: an object is deleted only if nothing marks it, its modification time is older
than ``grace`` and older than the oldest entry still queued in the outbox, and it is
still that old when looked at again just before the delete. Writers write (or touch)
an object again each time a record references it, so an object a put is about to
reference is young, and kept. What is left between that last look and the delete is
the residual race docs/architecture.md states.

Chunks (``chunks/``, the parts of ``<type>.chunks`` references, each line of which is
a ``sha256:<hex>:<size>`` and so marked like a whole reference) are shared by every
version of a growing value, and a writer does not write one again while it is younger
than ``Offload.refresh_after``: so a chunk is deleted only if older than ``grace`` plus
``refresh_after``. A put that skips a chunk saw it modified within ``refresh_after``;
``grace`` then protects it exactly as it protects a whole object that put wrote.

Half-written files of a writer killed mid-write (local directory only) and objects
whose checkpoint never committed are unmarked, so they go once older than ``grace``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors

from langgraph_dualsaver.errors import ConfigurationError
from langgraph_dualsaver.hot.keys import (
    dead_letter_key,
    outbox_key,
    registry_key,
    shard_registry_key,
    text,
    thread_keys,
)
from langgraph_dualsaver.offload.serde import REFERENCE
from langgraph_dualsaver.offload.store import Offload, StoredObject

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from langgraph_dualsaver.durable.saver import PostgresDurableSaver
    from langgraph_dualsaver.hot.saver import RedisHotSaver

__all__ = ["DEFAULT_GRACE", "GcReport", "collect", "references_in"]

DEFAULT_GRACE = timedelta(hours=1)
_PAGE = 500

_MARK_SQL = """
SELECT blob FROM dualsaver_blobs WHERE type LIKE '%.offload' OR type LIKE '%.chunks'
UNION ALL
SELECT blob FROM dualsaver_writes WHERE type LIKE '%.offload' OR type LIKE '%.chunks'
"""
"""A full scan of both tables' small columns; only the references' rows are read."""


@dataclass
class GcReport:
    """What one ``collect`` found and did (``dry_run``: what it would have done)."""

    store: str
    dry_run: bool
    cutoff: datetime
    """Objects modified at or after this are kept, referenced or not."""
    chunk_cutoff: datetime | None = None
    """The same for chunks: ``refresh_after`` earlier (``None``: as ``cutoff``)."""
    marked: int = 0
    """Distinct objects referenced by a record."""
    objects: int = 0
    bytes: int = 0
    kept_young: int = 0
    """Unreferenced, but not older than the cutoff (yet)."""
    swept: int = 0
    swept_bytes: int = 0
    leftovers: int = 0
    """Half-written files (a writer killed mid-write) among ``swept``."""
    swept_keys: list[str] = field(default_factory=list)

    def cutoff_of(self, *, chunk: bool) -> datetime:
        if chunk and self.chunk_cutoff is not None:
            return self.chunk_cutoff
        return self.cutoff

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["cutoff"] = self.cutoff.isoformat()
        found["chunk_cutoff"] = self.cutoff_of(chunk=True).isoformat()
        return found


def references_in(data: bytes | str) -> Iterable[str]:
    """The object digests referenced anywhere in ``data``."""
    raw = data.encode() if isinstance(data, str) else data
    return (found.group(1).decode() for found in REFERENCE.finditer(raw))


def _tiers(
    saver: BaseCheckpointSaver[Any],
) -> tuple[Offload, RedisHotSaver | None, PostgresDurableSaver | None]:
    from langgraph_dualsaver.chain.saver import DualSaver
    from langgraph_dualsaver.durable.saver import PostgresDurableSaver
    from langgraph_dualsaver.hot.saver import RedisHotSaver

    offload = getattr(saver, "offload", None)
    if not isinstance(offload, Offload):
        raise ConfigurationError("gc needs a saver with offload=Offload(url)")
    if isinstance(saver, DualSaver):
        return offload, saver.hot, saver.durable
    if isinstance(saver, RedisHotSaver):
        return offload, saver, None
    if isinstance(saver, PostgresDurableSaver):
        return offload, None, saver
    raise ConfigurationError(f"gc works on the package's savers, not {type(saver).__name__}")


async def collect(
    saver: BaseCheckpointSaver[Any],
    *,
    grace: timedelta = DEFAULT_GRACE,
    dry_run: bool = False,
) -> GcReport:
    """Delete the objects of ``saver.offload`` that no record of ``saver``'s tiers
    references and that are older than ``grace`` (see the module docstring).

    Every process writing to the store must use these tiers (one Redis prefix, one
    PostgreSQL schema): references held elsewhere are not seen.
    """
    if not isinstance(grace, timedelta) or grace < timedelta(0):
        raise ConfigurationError(f"grace must be a timedelta of 0 or more, got {grace!r}")
    offload, hot, durable = _tiers(saver)
    cutoff = datetime.now(timezone.utc) - grace
    marks: set[str] = set()
    if hot is not None:
        oldest = await _oldest_queued(hot)
        if oldest is not None:
            cutoff = min(cutoff, oldest)
        async for data in _hot_values(hot):
            marks.update(references_in(data))
    if durable is not None:
        async for data in _durable_values(durable):
            marks.update(references_in(data))
    report = GcReport(
        store=offload.url,
        dry_run=dry_run,
        cutoff=cutoff,
        chunk_cutoff=cutoff - offload.refresh_after,
        marked=len(marks),
    )
    # The store's calls block: the sweep runs in a thread, so a flush worker's event
    # loop goes on while it lists and deletes.
    await asyncio.to_thread(_sweep, offload, marks, report)
    return report


def _sweep(offload: Offload, marks: set[str], report: GcReport) -> None:
    for found in offload.objects():
        report.objects += 1
        report.bytes += found.size
        if found.digest in marks:
            continue
        cutoff = report.cutoff_of(chunk=found.chunk)
        if found.modified >= cutoff:
            report.kept_young += 1
            continue
        if report.dry_run or _delete_if_still_old(offload, found, cutoff):
            report.swept += 1
            report.swept_bytes += found.size
            report.leftovers += found.digest is None
            report.swept_keys.append(found.key)


def _delete_if_still_old(offload: Offload, found: StoredObject, cutoff: datetime) -> bool:
    """Delete ``found`` unless a writer wrote it again since it was listed."""
    if found.digest is None:
        offload.delete_leftover(found.key)
        return True
    now = offload.head(found.key)
    if now is None or now.modified >= cutoff:
        return False
    offload.delete(found.key)
    return True


# -- marks --------------------------------------------------------------------------


async def _oldest_queued(hot: RedisHotSaver) -> datetime | None:
    if not hot.outbox:
        return None
    from langgraph_dualsaver.chain.outbox import Outbox

    oldest = await Outbox.of(hot, consumer="dualsaver-gc").oldest_ms()
    return None if oldest is None else datetime.fromtimestamp(oldest / 1000, timezone.utc)


async def _hot_values(hot: RedisHotSaver) -> AsyncIterator[bytes]:
    """Every stored value's bytes in the hot tier: queued and dead-lettered records
    first, then the threads' values and writes."""
    for shard in range(hot.shards):
        for stream in (outbox_key(hot.prefix, shard), dead_letter_key(hot.prefix, shard)):
            async for data in _stream_values(hot, stream):
                yield data
    client: Any = await hot.conn.client()
    registries = [registry_key(hot.prefix)]
    registries += [shard_registry_key(hot.prefix, s) for s in range(hot.shards)]
    for registry in registries:
        with hot.conn.errors():
            threads = [text(t) for t in await client.zrange(registry, 0, -1)]
        for start in range(0, len(threads), _PAGE):
            keys = [thread_keys(hot.prefix, hot.shards, t) for t in threads[start : start + _PAGE]]
            blobs = await hot.conn.pipeline(
                lambda pipe, keys=keys: [pipe.hvals(k.blobs) for k in keys]  # type: ignore[misc]
            )
            for values in blobs:
                for data in values:
                    yield data
            for k in keys:
                for data in await _writes_of(hot, k.writes):
                    yield data


async def _writes_of(hot: RedisHotSaver, key: str) -> list[bytes]:
    client: Any = await hot.conn.client()
    with hot.conn.errors():
        try:
            members: list[bytes] = await client.zrange(key, 0, -1)
        except redis_errors.ResponseError as exc:  # the old layout: a HASH
            if "WRONGTYPE" not in str(exc):
                raise
            members = await client.hvals(key)
    return members


async def _stream_values(hot: RedisHotSaver, stream: str) -> AsyncIterator[bytes]:
    client: Any = await hot.conn.client()
    start = "-"
    while True:
        with hot.conn.errors():
            page = await client.xrange(stream, min=start, count=_PAGE)
        for _, fields in page:
            for data in fields.values():
                yield data
        if len(page) < _PAGE:
            return
        start = "(" + text(page[-1][0])


async def _durable_values(durable: PostgresDurableSaver) -> AsyncIterator[bytes]:
    async with durable._connection(transaction=True) as conn:
        async for row in conn.cursor(_MARK_SQL, prefetch=_PAGE):
            yield bytes(row["blob"])
