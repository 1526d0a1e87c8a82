"""Group commit for write_through: concurrent puts of one event loop share one
PostgreSQL transaction (``awrite_batch``), and their outbox entries are removed after it,
off the puts' path.

A put waits only for the COMMIT that holds its record. Under concurrency, the puts that
arrive while a batch commits go together in the next one, so PostgreSQL sees one
transaction per batch instead of one per put; a lone put still commits at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from langgraph_dualsaver.chain.outbox import Outbox, position
from langgraph_dualsaver.errors import DualSaverError, DurableWriteError, StoreUnavailableError
from langgraph_dualsaver.records import CheckpointRecord, WritesRecord

if TYPE_CHECKING:
    from langgraph_dualsaver.durable.saver import PostgresDurableSaver

__all__ = ["GroupCommitter"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    record: CheckpointRecord | WritesRecord
    entry_id: str
    done: asyncio.Future[None]


class GroupCommitter:
    """Commits write_through records of one event loop, batching concurrent ones."""

    def __init__(self, outbox: Outbox, durable: PostgresDurableSaver, max_batch: int = 256) -> None:
        self.outbox = outbox
        self.durable = durable
        self.max_batch = max_batch
        self._queue: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None

    async def commit(self, record: CheckpointRecord | WritesRecord, entry_id: str) -> None:
        """Return once ``record`` is committed to PostgreSQL; raise ``DurableWriteError``
        if it could not be (its outbox entry then stays queued for the flusher)."""
        loop = asyncio.get_running_loop()
        pending = _Pending(record, entry_id, loop.create_future())
        self._queue.append(pending)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="dualsaver-committer")
        await pending.done

    async def _run(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            committed = await self._write(batch)
            for item in committed:
                if not item.done.done():
                    item.done.set_result(None)
            try:
                await self.outbox.discard(
                    [(item.record.thread_id, item.entry_id) for item in committed]
                )
            except StoreUnavailableError as exc:
                # Committed already: the flusher writes these entries again, harmlessly.
                logger.info("outbox entries left for the flusher: %s", exc)

    async def _write(self, batch: list[_Pending]) -> list[_Pending]:
        """Commit a batch; on a rejected record, commit the others one by one."""
        try:
            refused = await self.durable.awrite_guarded(
                [item.record for item in batch], [position(item.entry_id) for item in batch]
            )
            for index in refused:
                await self._settle_refused(batch[index])
            return [item for item in batch if not item.done.done()]  # not failed just now
        except StoreUnavailableError as exc:
            for item in batch:
                _fail(item, exc)
            return []
        except DualSaverError as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
                return []
        committed = []
        for item in batch:
            committed += await self._write([item])
        return committed


    async def _settle_refused(self, item: _Pending) -> None:
        """A record a tombstone refused: fine if its thread was deleted after it (the
        delete wins, and took the hot copy too); an error if Redis still holds it, so
        the put is never acknowledged while PostgreSQL does not have it."""
        if await self.outbox.queued_in_live_thread(item.record.thread_id, item.entry_id):
            _fail(
                item,
                DurableWriteError(
                    f"PostgreSQL refused checkpoint data of thread {item.record.thread_id!r}: "
                    "a delete of the thread is recorded after it (is a clock that deleted "
                    "it while Redis was down ahead of Redis'?)"
                ),
            )


def _fail(item: _Pending, exc: Exception) -> None:
    if item.done.done():
        return
    if not isinstance(exc, StoreUnavailableError):
        item.done.set_exception(exc)  # PostgreSQL rejected the record itself
        return
    error = DurableWriteError(
        f"PostgreSQL did not commit checkpoint data of thread {item.record.thread_id!r} "
        f"({exc}); it stays queued in the outbox and will be flushed when PostgreSQL "
        "is back"
    )
    error.__cause__ = exc
    item.done.set_exception(error)
