"""Retention carried out in PostgreSQL: sweeps over the threads, in bounded transactions.

``langgraph_dualsaver.retention.decide`` says what a policy removes from a thread; here
that decision is made on the rows, the ancestors that kept checkpoints' DeltaChannels
need are added back (``sql.RETENTION_DELTA_KEEP``), and the rest is removed, at most
``rows_per_transaction`` checkpoints (with their pending writes and the blobs no
remaining checkpoint uses) per transaction, each under the thread's advisory lock (the
flusher's batches take the same one). Every transaction decides again on what it finds,
so a thread written meanwhile is judged as it is now.

A removed checkpoint is remembered for ``REMEMBER_FOR`` in
``dualsaver_deleted_checkpoints``, so a pending write to it still on its way through
the outbox is dropped on arrival (as after ``delete_for_runs``), then forgotten.

An idle thread to delete is first pruned to its latest checkpoints, in the same bounded
transactions, then deleted: without a hot tier here, in one transaction that decides
again; with one (``HotSide``, the chain's), through the chain's tombstone.

Two ways in: ``sweep`` (on demand: every thread once, the CLI's ``prune --idle ...``) and
``Sweeper.step`` (the flusher workers: one batch of threads when a sweep is due, one
worker at a time per schema, the position shared in ``dualsaver_settings``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, Protocol

import asyncpg

from langgraph_dualsaver.durable import history as history
from langgraph_dualsaver.durable import sql as sql
from langgraph_dualsaver.retention import (
    CheckpointFacts,
    Decision,
    Retention,
    decide,
    delta_channels,
)

if TYPE_CHECKING:
    from langgraph_dualsaver.durable.saver import PostgresDurableSaver

__all__ = [
    "REMEMBER_FOR",
    "HotSide",
    "RetentionReport",
    "Sweeper",
    "ThreadOutcome",
    "sweep",
]

logger = logging.getLogger(__name__)

REMEMBER_FOR = timedelta(days=1)
"""How long a removed checkpoint's id is kept to drop late writes to it."""
CURSOR = "retention_cursor"
"""The ``dualsaver_settings`` row: the last thread the workers' sweep looked at."""
SWEPT_AT = "retention_swept_at"
"""The ``dualsaver_settings`` row: when the workers' last sweep ended (epoch seconds)."""
_LOCK = "langgraph-dualsaver:retention"
_BUSY_RETRY_S = 1.0
"""How soon a worker looks again when another one holds the sweep."""
_FAILED_RETRY_S = 10.0
"""How soon a worker tries again after a batch failed."""


class HotSide(Protocol):
    """What a hot tier in front of PostgreSQL does when retention removes something."""

    async def removed(self, thread_id: str, removed: Mapping[str, Sequence[str]]) -> None:
        """Checkpoints (per namespace) PostgreSQL no longer has: drop their hot copies."""

    async def delete(self, thread_id: str, idle_cutoff_s: float) -> bool:
        """Delete the thread in both tiers unless it was written after
        ``idle_cutoff_s`` (epoch seconds) or still has writes queued; whether it went."""


@dataclass(frozen=True, slots=True)
class ThreadOutcome:
    """What retention did (or, in a dry run, would do) to one thread."""

    thread_id: str
    action: Literal["delete", "prune"]
    checkpoints: int
    """Checkpoints removed (a dry run: that would be; a delete: all of them)."""
    waiting: bool
    reason: str
    done: bool
    """False in a dry run, or when a delete found the thread in use and left it."""
    removed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Per namespace, the checkpoint ids removed (or that would be) by pruning."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "action": self.action,
            "checkpoints": self.checkpoints,
            "waiting": self.waiting,
            "reason": self.reason,
            "done": self.done,
            "removed": {ns: list(ids) for ns, ids in self.removed.items()},
        }


@dataclass
class RetentionReport:
    """One sweep (or one worker's batch)."""

    dry_run: bool
    threads_seen: int = 0
    outcomes: list[ThreadOutcome] = field(default_factory=list)
    transactions: list[int] = field(default_factory=list)
    """Checkpoints removed by each transaction, in order."""
    batches: list[int] = field(default_factory=list)
    """Threads looked at by each batch, in order."""

    @property
    def deleted_threads(self) -> int:
        return sum(1 for o in self.outcomes if o.action == "delete" and o.done)

    @property
    def removed_checkpoints(self) -> int:
        return sum(o.checkpoints for o in self.outcomes if o.done)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "threads_seen": self.threads_seen,
            "deleted_threads": self.deleted_threads,
            "removed_checkpoints": self.removed_checkpoints,
            "threads": [o.as_dict() for o in self.outcomes],
            "transactions": self.transactions,
            "batches": self.batches,
        }


# -- reading and deciding ----------------------------------------------------------------


async def facts_of(conn: asyncpg.Connection, thread_id: str) -> list[CheckpointFacts]:
    rows = await conn.fetch(sql.RETENTION_CHECKPOINTS, thread_id)
    return [
        CheckpointFacts(
            checkpoint_ns=r["checkpoint_ns"],
            checkpoint_id=r["checkpoint_id"],
            parent_checkpoint_id=r["parent_checkpoint_id"],
            created_at=r["created_at"],
            interrupted=r["interrupted"],
            delta_channels=_channels(r["counters"]),
        )
        for r in rows
    ]


def _channels(counters: str | None) -> tuple[str, ...]:
    return delta_channels(json.loads(counters)) if counters else ()


async def removals(
    conn: asyncpg.Connection,
    thread_id: str,
    decision: Decision,
    facts: Sequence[CheckpointFacts],
) -> dict[str, tuple[str, ...]]:
    """``decision.removed`` less the ancestors the kept checkpoints' DeltaChannels need."""
    by_id = {(f.checkpoint_ns, f.checkpoint_id): f for f in facts}
    result: dict[str, tuple[str, ...]] = {}
    for ns, doomed in decision.removed.items():
        starts = [i for i in decision.kept.get(ns, ()) if by_id[(ns, i)].delta_channels]
        needed: set[str] = set()
        if starts:
            channels = sorted({c for i in starts for c in by_id[(ns, i)].delta_channels})
            rows = await conn.fetch(
                sql.RETENTION_DELTA_KEEP, thread_id, ns, sorted(starts), channels, True
            )
            needed = {r["checkpoint_id"] for r in rows}
        left = tuple(i for i in doomed if i not in needed)
        if left:
            result[ns] = left
    return result


def _oldest(found: Mapping[str, Sequence[str]], limit: int) -> dict[str, list[str]]:
    """The ``limit`` oldest of ``found`` (per namespace), grouped again by namespace."""
    flat = sorted((i, ns) for ns, ids in found.items() for i in ids)[:limit]
    taken: dict[str, list[str]] = {}
    for checkpoint_id, ns in flat:
        taken.setdefault(ns, []).append(checkpoint_id)
    return taken


async def _remove(conn: asyncpg.Connection, thread_id: str, taken: Mapping[str, list[str]]) -> int:
    """Delete checkpoints with their writes and the blobs no remaining one uses; remember
    them (late writes are dropped); kept children no longer point at them."""
    count = 0
    for ns, ids in sorted(taken.items()):
        deleted = await conn.fetch(sql.RETENTION_DELETE, thread_id, ns, ids)
        gone = [r["checkpoint_id"] for r in deleted]
        if not gone:
            continue
        count += len(gone)
        await conn.execute(sql.PRUNE_WRITES, thread_id, ns, gone)
        await conn.execute(sql.REMEMBER_DELETED_CHECKPOINTS, thread_id, [ns] * len(gone), gone)
        await conn.execute(sql.RETENTION_ORPHANS, thread_id, ns, gone)
        await history.gc_blobs(conn, thread_id, ns, [r["channel_versions"] for r in deleted])
    return count


# -- one thread ---------------------------------------------------------------------------


async def enforce(
    conn: asyncpg.Connection,
    policy: Retention,
    thread_id: str,
    now: datetime,
    report: RetentionReport,
    hot: HotSide | None = None,
) -> None:
    """Apply ``policy`` to one thread (or, in a dry run, say what it would do)."""
    facts = await facts_of(conn, thread_id)
    decision = decide(policy, facts, now)
    if decision.action == "keep":
        return
    if report.dry_run:
        if decision.action == "delete":
            found: dict[str, tuple[str, ...]] = {}
            count = len(facts)
        else:
            found = await removals(conn, thread_id, decision, facts)
            count = sum(len(ids) for ids in found.values())
        if count:
            report.outcomes.append(
                ThreadOutcome(
                    thread_id,
                    decision.action,
                    count,
                    decision.waiting,
                    decision.reason,
                    done=False,
                    removed=found,
                )
            )
        return
    # Deleting starts as keep_latest: the thread shrinks in bounded transactions first.
    pruning = replace(policy, idle_action="keep_latest")
    removed_ids: dict[str, list[str]] = {}
    while True:
        async with conn.transaction():
            await conn.execute(sql.LOCK_THREADS, [thread_id])
            current = await facts_of(conn, thread_id)
            found = await removals(conn, thread_id, decide(pruning, current, now), current)
            taken = _oldest(found, policy.rows_per_transaction)
            count = await _remove(conn, thread_id, taken) if taken else 0
            if count:
                forget_before = now - REMEMBER_FOR
                await conn.execute(sql.RETENTION_FORGET, thread_id, forget_before)
        if not count:
            break
        report.transactions.append(count)
        for ns, ids in taken.items():
            removed_ids.setdefault(ns, []).extend(ids)
        if hot is not None:
            await hot.removed(thread_id, taken)
        if count < policy.rows_per_transaction:
            break
    pruned = sum(len(ids) for ids in removed_ids.values())
    removed = {ns: tuple(ids) for ns, ids in removed_ids.items()}
    if decision.action == "delete":
        deleted, left = await _delete(conn, policy, thread_id, now, hot)
        if deleted:
            outcome = ThreadOutcome(
                thread_id,
                "delete",
                pruned + left,
                decision.waiting,
                decision.reason,
                done=True,
                removed=removed,
            )
        else:  # written (or queued) again before the delete: what was pruned stays pruned
            reason = "idle, but in use again when it was to be deleted"
            outcome = ThreadOutcome(
                thread_id,
                "prune",
                pruned,
                decision.waiting,
                reason,
                done=bool(pruned),
                removed=removed,
            )
        report.outcomes.append(outcome)
        return
    if pruned:
        report.outcomes.append(
            ThreadOutcome(
                thread_id,
                "prune",
                pruned,
                decision.waiting,
                decision.reason,
                done=True,
                removed=removed,
            )
        )


async def _delete(
    conn: asyncpg.Connection,
    policy: Retention,
    thread_id: str,
    now: datetime,
    hot: HotSide | None,
) -> tuple[bool, int]:
    """The final delete of an idle thread: whether it went, and how many checkpoints
    it still had. Decided again on the rows (and, with a hot tier, on Redis)."""
    if hot is not None:
        current = await facts_of(conn, thread_id)
        if decide(policy, current, now).action != "delete":
            return False, 0
        assert policy.idle is not None
        return await hot.delete(thread_id, (now - policy.idle).timestamp()), len(current)
    async with conn.transaction():
        await conn.execute(sql.LOCK_THREADS, [thread_id])
        current = await facts_of(conn, thread_id)
        if decide(policy, current, now).action != "delete":
            return False, 0
        await history.delete_threads(conn, [thread_id])
    return True, len(current)


# -- sweeps ---------------------------------------------------------------------------------


async def sweep(
    durable: PostgresDurableSaver,
    policy: Retention,
    *,
    dry_run: bool = False,
    hot: HotSide | None = None,
) -> RetentionReport:
    """Every thread once, ``threads_per_batch`` at a time, now."""
    report = RetentionReport(dry_run=dry_run)
    now = datetime.now(timezone.utc)
    cursor = ""
    async with durable._connection() as conn:
        while True:
            threads = await _page(conn, cursor, policy.threads_per_batch)
            for thread_id in threads:
                await enforce(conn, policy, thread_id, now, report, hot)
            report.batches.append(len(threads))
            report.threads_seen += len(threads)
            if len(threads) < policy.threads_per_batch:
                return report
            cursor = threads[-1]


async def _page(conn: asyncpg.Connection, after: str, limit: int) -> list[str]:
    return [r["thread_id"] for r in await conn.fetch(sql.RETENTION_THREADS, after, limit)]


class Sweeper:
    """The flusher workers' retention: ``step`` runs one batch when a sweep is due.

    A sweep starts ``policy.interval`` after the last one ended, over every thread.
    Workers share it: the batch runs under a session advisory lock per schema (a
    worker that does not get it goes back to flushing), and the position and the end
    of the last sweep are rows of ``dualsaver_settings``.
    """

    def __init__(
        self, durable: PostgresDurableSaver, policy: Retention, hot: HotSide | None = None
    ) -> None:
        self.durable = durable
        self.policy = policy
        self.hot = hot
        self.last: RetentionReport | None = None
        """The last batch's report."""
        self.sweeps = 0
        """Sweeps this worker finished."""
        self._next = 0.0

    async def step(self) -> RetentionReport | None:
        """One batch of threads if a sweep is due; ``None`` if not (or another worker
        holds it). A failed batch raises, and is tried again after a pause."""
        if time.monotonic() < self._next:
            return None
        try:
            return await self._locked_batch()
        except Exception:
            # Not again on every flush pass: a store may be down.
            pause = min(self.policy.interval.total_seconds(), _FAILED_RETRY_S)
            self._next = time.monotonic() + pause
            raise

    async def _locked_batch(self) -> RetentionReport | None:
        key = _LOCK if self.durable.schema is None else f"{_LOCK}:{self.durable.schema}"
        async with self.durable._connection() as conn:
            if not await conn.fetchval(sql.RETENTION_LOCK, key):
                self._next = time.monotonic() + _BUSY_RETRY_S
                return None
            try:
                return await self._batch(conn)
            finally:
                try:
                    await conn.execute(sql.RETENTION_UNLOCK, key)
                except BaseException:
                    conn.terminate()  # ending the session releases the lock
                    raise

    async def _batch(self, conn: asyncpg.Connection) -> RetentionReport | None:
        policy = self.policy
        cursor = await conn.fetchval(sql.GET_SETTING, CURSOR) or ""
        swept_at = await conn.fetchval(sql.GET_SETTING, SWEPT_AT)
        now = datetime.now(timezone.utc)
        if not cursor and swept_at is not None:
            wait = float(swept_at) + policy.interval.total_seconds() - now.timestamp()
            if wait > 0:
                self._next = time.monotonic() + wait
                return None
        report = RetentionReport(dry_run=False)
        threads = await _page(conn, cursor, policy.threads_per_batch)
        for thread_id in threads:
            await enforce(conn, policy, thread_id, now, report, self.hot)
        report.batches.append(len(threads))
        report.threads_seen = len(threads)
        if len(threads) < policy.threads_per_batch:
            await conn.execute(sql.PUT_SETTING, CURSOR, "")
            await conn.execute(sql.PUT_SETTING, SWEPT_AT, repr(time.time()))
            self._next = time.monotonic() + policy.interval.total_seconds()
            self.sweeps += 1
            if report.outcomes:
                logger.info(
                    "retention sweep (%s) ended: %d threads deleted, %d checkpoints removed "
                    "in the last batch", policy.describe(), report.deleted_threads,
                    report.removed_checkpoints,
                )  # fmt: skip
        else:
            await conn.execute(sql.PUT_SETTING, CURSOR, threads[-1])
        self.last = report
        return report
