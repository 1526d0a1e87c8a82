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
from typing import TYPE_CHECKING, TypeVar

from langgraph_dualsaver.chain.deadletters import DEAD_LETTER_CAP
from langgraph_dualsaver.chain.outbox import RECORD_FIELD, Entry, Outbox, OutboxKey
from langgraph_dualsaver.errors import DualSaverError, StoreUnavailableError

if TYPE_CHECKING:
    from langgraph_dualsaver.durable.retention import Sweeper
    from langgraph_dualsaver.durable.saver import PostgresDurableSaver
    from langgraph_dualsaver.hot.saver import RedisHotSaver

__all__ = ["FlushSettings", "Flusher"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
    batch_bytes: int = 16 * 1024 * 1024
    """Most record bytes written to PostgreSQL in one transaction (a larger record goes
    alone), so one large value never holds up the entries behind it."""
    linger: timedelta = timedelta(milliseconds=5)
    """How long a woken background flusher waits for more writes before its pass, so a
    pass carries many entries, not one per put (each pass costs a read of every shard,
    a PostgreSQL round trip and an acknowledgement, whatever it carries)."""
    dead_letter_cap: int = DEAD_LETTER_CAP
    """Most dead letters per shard; past it an entry stays queued (and is logged)
    rather than dropping an older letter."""
    bytes_per_second: int = 8 * 1024 * 1024
    """The slowest PostgreSQL write rate a batch is allowed: a batch may take the
    command timeout plus its bytes at this rate before it counts as a failure."""


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
        key: OutboxKey | None = None,
    ) -> None:
        self.hot = hot
        self.durable = durable
        self.settings = settings or FlushSettings()
        self.consumer = consumer or consumer_name()
        self.outbox = Outbox.of(hot, self.consumer, key)
        self.flushed = 0
        self.dead_lettered = 0
        self.refused = 0
        """Records a tombstone refused: written before their thread was deleted."""
        self.failed_passes = 0
        self._attempts: Counter[tuple[str, str]] = Counter()
        """Failed attempts per ``(stream, entry id)``: ids repeat across shard streams."""
        self._own_pending = True  # a new consumer holds nothing, but one look is cheap
        self._next_claim = 0.0
        self.retention: Sweeper | None = None
        """Retention (``DualSaver(retention=...)``): ``run_forever`` runs a batch of it
        beside its passes when a sweep is due. Never ``run_once`` or ``drain``: a put
        that flushes (backpressure, write_through, an interrupt) never waits for it."""
        self._retaining: asyncio.Task[None] | None = None

    @property
    def key(self) -> OutboxKey | None:
        """The key entries must carry a tag of; ``None`` trusts every entry."""
        return self.outbox.key

    @key.setter
    def key(self, key: OutboxKey | None) -> None:
        self.outbox.key = key

    async def setup(self) -> None:
        await self.outbox.ensure_group()

    async def run_once(self) -> int:
        """One pass: own unacknowledged entries, then reclaimed ones, then new ones.

        Returns how many entries were made durable. Raises ``StoreUnavailableError``
        when a store is down; nothing is acknowledged then.
        """
        outbox = self.outbox
        done = 0
        if self._own_pending:  # only after a pass that failed part way, or left some
            own = await outbox.read(self.settings.batch, own_pending=True)
            self._own_pending = bool(own)
            own = self._ripe(own)
            if own:
                done += await self._guarded(self._apply(own))
        claim_s = self.settings.claim_idle.total_seconds()
        now = time.monotonic()
        if now >= self._next_claim:  # other consumers' leftovers: looked for now and then
            self._next_claim = now + claim_s / 2
            claimed = await outbox.claim_idle(int(claim_s * 1000), self.settings.batch)
            if claimed:
                poison = [e for e, n in claimed if n > self.settings.max_deliveries]
                if poison:
                    await self._dead_letter(poison, "delivered too many times")
                rest = [e for e, n in claimed if n <= self.settings.max_deliveries]
                done += await self._guarded(self._apply(rest))
        # Guarded too: a read that fails on one stream may have delivered the others'.
        reading = outbox.read(self.settings.batch, own_pending=False)
        fresh = self._ripe(await self._guarded(reading))
        if fresh:
            done += await self._guarded(self._apply(fresh))
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

    async def _guarded(self, applying: Awaitable[T]) -> T:
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
        outbox = self.outbox
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
        """Flush until ``stop`` is set; a store outage is logged and retried. With
        ``retention``, a batch of it runs beside the passes (a task of its own, one at
        a time), so flushing never waits for it; on stop, the batch under way finishes."""
        try:
            await self._flush_until(stop, wake)
        except BaseException:
            if self._retaining is not None:
                self._retaining.cancel()
            raise
        if self._retaining is not None:
            await self._retaining

    async def _flush_until(self, stop: asyncio.Event, wake: asyncio.Event | None) -> None:
        interval = self.settings.interval.total_seconds()
        linger = self.settings.linger.total_seconds()
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
            except Exception:
                # A worker must not die of one bad pass, whatever it was: its entries
                # stay queued and are retried (and dead-lettered after max_deliveries).
                logger.exception("flusher %s: pass failed; retrying", self.consumer)
                self.failed_passes += 1
                moved = 0
            if self.retention is not None and (self._retaining is None or self._retaining.done()):
                self._retaining = asyncio.ensure_future(self._retain())
            if moved >= self.settings.batch:
                continue  # a full batch: more is likely waiting
            if moved and wake is None:  # a worker: nobody wakes it, writes keep coming
                await _pause(stop, linger)
                continue
            await _pause(wake if wake is not None else stop, interval)
            if wake is not None and wake.is_set():
                wake.clear()
                await _pause(stop, linger)  # let the writes that follow join the batch

    async def _retain(self) -> None:
        """One batch of retention, if due; a failure is logged, never fatal."""
        assert self.retention is not None
        try:
            await self.retention.step()
        except StoreUnavailableError as exc:
            logger.warning("flusher %s: retention skipped: %s", self.consumer, exc)
        except Exception:
            logger.exception("flusher %s: retention batch failed", self.consumer)

    # -- internals --------------------------------------------------------------------

    async def _apply(self, entries: Sequence[Entry]) -> int:
        """Make entries durable: dead-letter what cannot be applied, apply tombstones,
        then records in batches bounded by count and bytes. Returns how many entries
        left the queue."""
        bad = [e for e in entries if e.problem is not None]
        for problem in sorted({e.problem for e in bad if e.problem}):
            await self._dead_letter([e for e in bad if e.problem == problem], problem)
        deletions = [e for e in entries if e.problem is None and e.deleted_thread is not None]
        for entry in deletions:
            assert entry.deleted_thread is not None
            await self.durable.adelete_thread(entry.deleted_thread, tombstone_seq=entry.seq)
        if deletions:
            await self._ack(deletions)
        done = len(deletions)
        records = [e for e in entries if e.problem is None and e.record is not None]
        for batch in _by_bytes(records, self.settings.batch_bytes):
            done += await self._write(batch)
        return done

    async def _write(self, batch: Sequence[Entry]) -> int:
        """One transaction for ``batch``; if PostgreSQL refuses it (or cannot take it in
        its time budget while it answers otherwise), entry by entry, so one bad entry
        costs only itself."""
        try:
            refused = await self.durable.awrite_guarded(
                [e.record for e in batch],  # type: ignore[misc]
                [e.seq for e in batch],
                timeout=self._budget(batch),
            )
        except StoreUnavailableError as exc:
            if not await self._postgres_answers():
                raise  # PostgreSQL is down: nothing is acknowledged, all is retried
            return await self._isolate(batch, exc)
        except DualSaverError as exc:
            return await self._isolate(batch, exc)
        refused_entries = [batch[i] for i in refused]
        skipped = set(refused)
        accepted = [e for i, e in enumerate(batch) if i not in skipped]
        await self._ack(accepted)
        return len(accepted) + await self._settle_refused(refused_entries)

    async def _isolate(self, batch: Sequence[Entry], exc: Exception) -> int:
        """A batch PostgreSQL refused, or could not take in time while it answers: each
        entry alone, so only the bad one fails."""
        if len(batch) == 1:
            return await self._failed(batch[0], exc)
        logger.warning("flush batch failed (%s); retrying entries one by one", exc)
        return sum([await self._write([entry]) for entry in batch])

    async def _failed(self, entry: Entry, exc: Exception) -> int:
        """An entry PostgreSQL rejected or could not take in time: retried from this
        consumer's pending list, dead-lettered after ``max_deliveries`` attempts."""
        attempts = self._attempts[entry.stream, entry.id] = (
            self._attempts[entry.stream, entry.id] + 1
        )
        self._own_pending = True
        if attempts < self.settings.max_deliveries:
            logger.warning("outbox entry %s failed (%s); it will be retried", entry.id, exc)
            return 0
        reason = f"failed {attempts} times: {exc}"
        return await self._dead_letter([entry], reason)

    async def _settle_refused(self, entries: Sequence[Entry]) -> int:
        """Records a tombstone refused. One written before its thread was deleted is
        done with (delete wins). One whose thread still holds it in Redis was written
        *after* the delete and refused anyway (a delete made while Redis was down, by a
        clock ahead of Redis'): never dropped quietly, it is dead-lettered and stays
        hot, for an operator to replay."""
        done = 0
        for entry in entries:
            assert entry.thread_id is not None
            if await self.outbox.queued_in_live_thread(entry.thread_id, entry.id):
                done += await self._dead_letter(
                    [entry], "refused by a tombstone, but written after the delete"
                )
            else:
                self.refused += 1
                await self._ack([entry])
                done += 1
        return done

    def _budget(self, batch: Sequence[Entry]) -> float:
        """Seconds a batch may take: the command timeout plus its bytes at the slowest
        acceptable rate (a 60 MiB value must not count as PostgreSQL being down)."""
        size = sum(_size(entry) for entry in batch)
        return self.durable.timeouts.command_s + size / self.settings.bytes_per_second

    async def _postgres_answers(self) -> bool:
        try:
            await self.durable.aping(self.durable.timeouts.command_s)
        except StoreUnavailableError:
            return False
        return True

    async def _dead_letter(self, entries: Sequence[Entry], reason: str) -> int:
        """Move entries to the dead-letter stream; return how many moved. Their threads
        stay counted pending, so a dead-lettered record stays hot (never expires) until
        an operator acts. Past the stream's cap an entry stays queued instead."""
        moved = await self.outbox.dead_letter_entries(
            entries, reason, cap=self.settings.dead_letter_cap
        )
        count = sum(moved)
        logger.error("moved %d outbox entries to the dead-letter stream: %s", count, reason)
        if count < len(entries):
            self._own_pending = True  # kept, and retried: never dropped
        self.dead_lettered += count
        for entry, gone in zip(entries, moved, strict=True):
            if gone:
                self._attempts.pop((entry.stream, entry.id), None)
        return count

    async def _ack(self, entries: Sequence[Entry]) -> None:
        """Acknowledge durable entries (``Outbox.ack``) and count them flushed."""
        if not entries:
            return
        await self.outbox.ack(entries)
        self.flushed += len(entries)
        for entry in entries:
            self._attempts.pop((entry.stream, entry.id), None)


def _size(entry: Entry) -> int:
    return len(entry.fields.get(RECORD_FIELD, b""))


def _by_bytes(entries: Sequence[Entry], limit: int) -> list[list[Entry]]:
    """``entries`` in order, cut into runs of at most ``limit`` record bytes (a larger
    entry forms a run of its own)."""
    batches: list[list[Entry]] = []
    current: list[Entry] = []
    size = 0
    for entry in entries:
        if current and size + _size(entry) > limit:
            batches.append(current)
            current, size = [], 0
        current.append(entry)
        size += _size(entry)
    if current:
        batches.append(current)
    return batches
