"""The flusher: moves outbox entries to PostgreSQL, acknowledging only after COMMIT.

It runs as a background task inside ``DualSaver`` and as a standalone worker
(``dualsaver flush --follow``); any number of them can run at once, in any number of
processes, because they share one consumer group: each entry is delivered to one of
them, and an entry a dead consumer held is reclaimed after ``claim_idle``. PostgreSQL
writes are idempotent, so an entry written and then reclaimed (its flusher died between
COMMIT and XACK) is written again harmlessly: each checkpoint is once in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from langgraph_dualsaver.errors import DualSaverError, StoreUnavailableError
from langgraph_dualsaver.outbox import GROUP, Entry, Outbox

if TYPE_CHECKING:
    from langgraph_dualsaver.postgres import PostgresDurableSaver
    from langgraph_dualsaver.redis import RedisHotSaver

__all__ = ["FlushSettings", "Flusher"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FlushSettings:
    """How the flusher batches, reclaims and gives up."""

    batch: int = 500
    """Most entries written to PostgreSQL in one transaction."""
    interval: timedelta = timedelta(milliseconds=200)
    """How long an idle background flusher waits before looking again."""
    claim_idle: timedelta = timedelta(seconds=15)
    """An entry held this long by another consumer is taken over (its flusher died)."""
    max_deliveries: int = 5
    """After this many failed attempts an entry goes to the dead-letter stream."""
    min_age: timedelta = timedelta(0)
    """Entries younger than this are left alone. write_through's background flusher
    uses it: the put commits its own record, and the flusher only picks up what a
    failed commit left behind, never a record a prune or delete has since removed."""


async def _pause(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``. Not ``asyncio.wait_for``: on Python 3.11
    it can swallow a cancellation that arrives as the wait ends (CPython gh-86296),
    and a flusher that survives ``asyncio.run``'s shutdown hangs it."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


def _cancel_requested() -> bool:
    """Whether this task was asked to stop, even if a library swallowed the
    ``CancelledError`` (redis-py awaits ``asyncio.wait_for`` too)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return bool(cancelling and cancelling())


def consumer_name() -> str:
    """Unique per flusher. Not from ``uuid.uuid4``: an application's tests may patch it
    for repeatable ids, and a saver drawing from it would shift the graph's ids."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Flusher:
    """Drains the outbox of ``hot`` into ``durable``."""

    def __init__(
        self,
        hot: RedisHotSaver,
        durable: PostgresDurableSaver,
        settings: FlushSettings | None = None,
        consumer: str | None = None,
    ) -> None:
        self.hot = hot
        self.durable = durable
        self.settings = settings or FlushSettings()
        self.consumer = consumer or consumer_name()
        self.flushed = 0
        self.dead_lettered = 0
        self.failed_passes = 0
        self._attempts: Counter[str] = Counter()
        self._own_pending = True  # a new consumer holds nothing, but one look is cheap
        self._next_claim = 0.0

    async def outbox(self) -> Outbox:
        client = await self.hot.aclient()
        return Outbox(client, self.hot.outbox_keys(), self.hot.dead_letter_key, self.consumer)

    async def setup(self) -> None:
        await (await self.outbox()).ensure_group()

    async def run_once(self) -> int:
        """One pass: own unacknowledged entries, then reclaimed ones, then new ones.

        Returns how many entries were made durable. Raises ``StoreUnavailableError``
        when a store is down; nothing is acknowledged then.
        """
        outbox = await self.outbox()
        done = 0
        if self._own_pending:  # only after a pass that failed part way, or left some
            own = await outbox.read(self.settings.batch, own_pending=True)
            self._own_pending = bool(own)
            own = self._ripe(own)
            if own:
                done += await self._guarded(self._apply(outbox, own))
        claim_s = self.settings.claim_idle.total_seconds()
        now = time.monotonic()
        if now >= self._next_claim:  # other consumers' leftovers: looked for now and then
            self._next_claim = now + claim_s / 2
            claimed = await outbox.claim_idle(int(claim_s * 1000), self.settings.batch)
            if claimed:
                poison = [e for e, n in claimed if n > self.settings.max_deliveries]
                if poison:
                    await self._dead_letter(outbox, poison, "delivered too many times")
                rest = [e for e, n in claimed if n <= self.settings.max_deliveries]
                done += await self._guarded(self._apply(outbox, rest))
        fresh = self._ripe(await outbox.read(self.settings.batch, own_pending=False))
        if fresh:
            done += await self._guarded(self._apply(outbox, fresh))
        return done

    def _ripe(self, entries: list[Entry]) -> list[Entry]:
        """The entries at least ``min_age`` old; the others stay in this consumer's
        pending list for a later pass."""
        min_age_ms = self.settings.min_age.total_seconds() * 1000
        if not min_age_ms or not entries:
            return entries
        newest_ripe = time.time() * 1000 - min_age_ms
        ripe = [e for e in entries if int(e.id.split("-")[0]) <= newest_ripe]
        if len(ripe) < len(entries):
            self._own_pending = True
        return ripe

    async def _guarded(self, applying: Awaitable[int]) -> int:
        """Apply entries now in this consumer's pending list; if that fails part way,
        the next pass reads that list first."""
        try:
            return await applying
        except BaseException:
            self._own_pending = True
            raise

    async def drain(self, timeout: timedelta = timedelta(seconds=30)) -> int:
        """Flush until every entry queued before this call is durable (entries held by
        other live flushers included: they are waited for, or reclaimed after
        ``claim_idle``). Entries written meanwhile are left to the background flusher,
        so writers that keep putting cannot keep a drain going."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        outbox = await self.outbox()
        cutoff = await outbox.server_time_ms()
        total = 0
        while True:
            moved = await self.run_once()
            total += moved
            oldest = await outbox.oldest_ms()
            if oldest is None or oldest > cutoff:
                return total
            if moved:
                continue
            if loop.time() > deadline:
                raise StoreUnavailableError(
                    f"the outbox did not drain within {timeout.total_seconds():.0f}s; "
                    f"{await outbox.length()} entries are still queued"
                )
            await asyncio.sleep(0.01)  # others hold the rest; poll their progress

    async def run_forever(self, stop: asyncio.Event, wake: asyncio.Event | None = None) -> None:
        """Flush until ``stop`` is set; a store outage is logged and retried."""
        interval = self.settings.interval.total_seconds()
        down = False
        while not stop.is_set() and not _cancel_requested():
            try:
                moved = await self.run_once()
                if down:
                    logger.warning("flusher %s: stores reachable again", self.consumer)
                    down = False
            except StoreUnavailableError as exc:
                if not down:
                    logger.warning("flusher %s: %s; retrying", self.consumer, exc)
                    down = True
                moved = 0
            except DualSaverError:
                # A background worker must not die of one bad pass; its entries stay
                # queued and are retried (and dead-lettered after max_deliveries).
                logger.exception("flusher %s: pass failed; retrying", self.consumer)
                self.failed_passes += 1
                moved = 0
            if moved:
                continue
            await _pause(wake if wake is not None else stop, interval)
            if wake is not None:
                wake.clear()

    # -- internals --------------------------------------------------------------------

    async def _apply(self, outbox: Outbox, entries: Sequence[Entry]) -> int:
        undecodable = [e for e in entries if e.record is None and e.deleted_thread is None]
        if undecodable:
            await self._dead_letter(outbox, undecodable, "undecodable record")
        deletions = [e for e in entries if e.deleted_thread is not None]
        records = [e for e in entries if e.record is not None]
        for entry in deletions:
            assert entry.deleted_thread is not None
            await self.durable.adelete_thread(entry.deleted_thread, tombstone_seq=entry.seq)
        good: list[Entry] = list(deletions)
        if records:
            try:
                await self.durable.awrite_batch(
                    [e.record for e in records], [e.seq for e in records]
                )
                good += records
            except StoreUnavailableError:
                raise
            except DualSaverError as exc:  # a record PostgreSQL rejects: isolate it
                logger.warning("flush batch rejected (%s); retrying entries one by one", exc)
                good += await self._apply_one_by_one(outbox, records)
        await self.ack(outbox, good)
        return len(good)

    async def _apply_one_by_one(self, outbox: Outbox, records: Sequence[Entry]) -> list[Entry]:
        good = []
        for entry in records:
            try:
                await self.durable.awrite_batch([entry.record], [entry.seq])
                good.append(entry)
            except StoreUnavailableError:
                raise
            except DualSaverError as exc:
                self._attempts[entry.id] += 1
                self._own_pending = True  # retried from this consumer's pending list
                if self._attempts[entry.id] >= self.settings.max_deliveries:
                    await self._dead_letter(outbox, [entry], str(exc))
        return good

    async def _dead_letter(self, outbox: Outbox, entries: Sequence[Entry], reason: str) -> None:
        logger.error("moving %d outbox entries to the dead-letter stream: %s", len(entries), reason)
        await outbox.dead_letter_entries(entries, reason)
        await self._release(entries, [True] * len(entries))
        self.dead_lettered += len(entries)
        for entry in entries:
            self._attempts.pop(entry.id, None)

    async def ack(self, outbox: Outbox, entries: Sequence[Entry]) -> None:
        """Acknowledge durable entries, one script per shard, one round trip for all:
        XACK + XDEL and, if this call removed the entry, the thread's pending count
        down (at zero its keys get their TTL), atomically: a crash can never leave a
        thread counted pending forever (it would never expire)."""
        if not entries:
            return
        await self.hot.aack_durable(
            [(entry.thread_id, entry.id) for entry in entries if entry.thread_id is not None],
            group=GROUP,
        )
        self.flushed += len(entries)
        for entry in entries:
            self._attempts.pop(entry.id, None)

    async def _release(self, entries: Sequence[Entry], removed: Sequence[bool]) -> None:
        """Count each record entry once (whoever deleted it) against its thread's
        pending counter, so its keys get their TTL when nothing is pending."""
        counts: Counter[str] = Counter()
        for entry, was_removed in zip(entries, removed, strict=False):
            if was_removed and entry.record is not None:
                counts[entry.record.thread_id] += 1
        if counts:
            await self.hot.amark_durable(dict(counts))
