"""``DualSaver``: Redis for the hot part of every thread, PostgreSQL for all of it.

Writes go to Redis, and in the same script to the shard's outbox stream, so nothing is
in Redis without being queued for PostgreSQL. In ``"write_through"`` mode ``put``
returns after PostgreSQL has committed the record too; in ``"write_behind"`` mode it
returns after Redis, and the flusher (a background task here, or ``dualsaver flush
--follow`` workers) makes it durable within the flush interval, with ``max_lag`` bounding
how far PostgreSQL may fall behind.

Reads try Redis, then PostgreSQL, and put a thread read from PostgreSQL back into Redis.
When Redis is unreachable both reads and writes go to PostgreSQL directly (logged once,
counted); when it comes back, threads written meanwhile are evicted from Redis (and all
of them if Redis restarted, e.g. from an old snapshot), so no stale "latest" is served.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Any, Literal, TypeVar, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import INTERRUPT

from langgraph_dualsaver._base import AsyncFirstSaver
from langgraph_dualsaver._paging import ListKey, comes_after, list_key
from langgraph_dualsaver.chain.committer import GroupCommitter
from langgraph_dualsaver.chain.flusher import Flusher, FlushSettings
from langgraph_dualsaver.chain.outbox import OutboxKey, clock_position, position
from langgraph_dualsaver.chain.retention import ChainHotSide
from langgraph_dualsaver.compression import DEFAULT_COMPRESSION, Compression
from langgraph_dualsaver.durable.retention import RetentionReport, Sweeper, sweep
from langgraph_dualsaver.durable.saver import PostgresDurableSaver, records_tuple
from langgraph_dualsaver.errors import (
    ConfigurationError,
    DurableWriteError,
    InvalidInputError,
    StoreUnavailableError,
)
from langgraph_dualsaver.hot.listing import list_checkpoints
from langgraph_dualsaver.hot.saver import OutboxFullError, RedisHotSaver
from langgraph_dualsaver.hot.write_wait import WriteWait
from langgraph_dualsaver.offload.store import Offload, env_offload
from langgraph_dualsaver.records import (
    CheckpointRecord,
    Limits,
    WritesRecord,
    checkpoint_ids,
    checkpoint_record,
    list_arguments,
    prune_arguments,
    run_ids_argument,
    saved_config,
    validate_id,
    writes_record,
)
from langgraph_dualsaver.retention import Retention
from langgraph_dualsaver.runs import (
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_LEASE,
    Claim,
    OnBusy,
    checkpoint_claim,
    exclusive_settings,
    note_head,
    note_read,
    retrying,
    wait_until_free,
    writes_claim,
)
from langgraph_dualsaver.settings import Timeouts
from langgraph_dualsaver.state_upgrades import StateSchema

__all__ = ["DualSaver", "DualStats", "Mode", "ProcessCounts"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_LEFTOVER_AGE = timedelta(seconds=5)
Mode = Literal["write_behind", "write_through"]
MODES: tuple[Mode, ...] = ("write_behind", "write_through")


@dataclass(frozen=True, slots=True)
class ProcessCounts:
    """This process's counters, read without any I/O (the metrics export them)."""

    hot_hits: int
    hot_misses: int
    backfills: int
    backfills_skipped: int
    """Checkpoints read from PostgreSQL but not put back into Redis: beyond the limits."""
    degraded_reads: int
    degraded_writes: int
    redis_down_for_s: float | None
    """How long Redis has been unreachable; ``None`` while it answers."""


@dataclass(frozen=True, slots=True)
class DualStats(ProcessCounts):
    """What the chain is doing, for dashboards, ``dualsaver status`` and tests: this
    process's counters and the outbox as Redis holds it."""

    mode: Mode
    outbox_length: int | None
    """Entries not yet durable; ``None`` while Redis is unreachable."""
    oldest_pending_age_s: float | None
    dead_letters: int | None
    flushed: int
    refused: int
    """Records a tombstone refused because their thread was deleted after them."""
    redis_available: bool


@dataclass
class _Counters:
    hot_hits: int = 0
    hot_misses: int = 0
    backfills: int = 0
    backfills_skipped: int = 0
    degraded_reads: int = 0
    degraded_writes: int = 0
    flushed: int = 0


@dataclass
class _Background:
    task: asyncio.Task[None]
    stop: asyncio.Event
    wake: asyncio.Event


@dataclass
class _RedisHealth:
    """A small circuit breaker: after a failure, Redis is skipped for ``cooldown_s``
    so every call does not pay the timeout again."""

    cooldown_s: float = 1.0
    down_since: float | None = None
    retry_at: float = 0.0
    degraded_threads: set[str] = field(default_factory=set)
    deleted_threads: dict[str, int] = field(default_factory=dict)
    """Threads deleted while Redis was down, with the tombstone's position: their hot
    copies go (without a tombstone of their own) once Redis is back."""
    needs_reconcile: bool = True
    connections_seen: int = -1
    """The hot tier's ``connections_opened`` at the last reconcile. It lives here, with
    the rest of the health, because ``with_allowlist`` copies share the connections."""

    def available(self) -> bool:
        return self.down_since is None or time.monotonic() >= self.retry_at

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if self.down_since is None:
            logger.warning("Redis unavailable (%s); reading and writing PostgreSQL directly", exc)
            self.down_since = now
        self.retry_at = now + self.cooldown_s
        self.needs_reconcile = True


class DualSaver(AsyncFirstSaver):
    """The chained checkpointer: compile graphs with it.

    Args:
        hot: the Redis tier; it must be built with ``outbox=True``.
        durable: the PostgreSQL tier.
        mode: ``"write_behind"`` (``put`` returns after Redis) or ``"write_through"``
            (``put`` returns after the PostgreSQL commit). Not LangGraph's
            ``durability=``, which decides when the graph calls ``put`` at all.
        max_lag: most outbox entries PostgreSQL may be behind in write_behind mode,
            over all processes sharing the prefix: each of the ``shards`` outbox
            streams holds at most ``max_lag // shards`` (at least one). A ``put`` that finds its
            shard full first drains the outbox (backpressure), and raises
            ``StoreUnavailableError`` if PostgreSQL cannot take it.
        flush: batching, reclaim and dead-letter settings of the flusher.
        background_flush: run a flusher task in each event loop the saver is used
            from. Turn it off when ``dualsaver flush --follow`` workers do the job.
        outbox_key: the secret that authenticates outbox entries (``OutboxKey``, or
            hex text; ``DUALSAVER_OUTBOX_KEY`` when not given). Without one, the key
            PostgreSQL holds (``asetup`` generates it once) is used: every process and
            flush worker of an installation must share it.
        replicas: write_behind: a put is acknowledged from Redis only once this many
            replicas hold it (``WAIT``); fewer within half the command timeout and it
            goes to PostgreSQL instead, as when Redis is down. ``None``: as the hot tier
            was built (by default: on Redis Cluster every replica of the master, on a
            single server none); ``0``: never wait.
        aof: write_behind: also wait until the master's append-only file has fsynced
            the put (``WAITAOF 1 0``; needs ``appendonly yes``). ``None``: as the hot
            tier was built.
        exclusive_runs: one run per thread at a time (``runs``): a second run's write
            raises ``ThreadBusyError`` and writes nothing; checked in the put's own
            Redis script, or by PostgreSQL while Redis is down. Off by default.
        on_busy: ``"raise"``, or ``"wait"`` (up to ``busy_timeout``) for the holder.
        lease: how long a run holds its thread past its last write (a crashed run
            blocks it that long): longer than the longest step.
        retention: a ``Retention`` policy the flusher workers enforce beside their
            passes (``run_forever``: this saver's background flusher, and ``dualsaver
            flush --follow`` workers given it), in PostgreSQL and then Redis; ``aretain``
            applies it at once. ``None``: everything is kept.
    """

    def __init__(
        self,
        hot: RedisHotSaver,
        durable: PostgresDurableSaver,
        *,
        mode: Mode = "write_behind",
        max_lag: int = 10_000,
        flush: FlushSettings | None = None,
        background_flush: bool = True,
        serde: SerializerProtocol | None = None,
        limits: Limits | None = None,
        outbox_key: OutboxKey | str | None = None,
        state_schema: StateSchema | None = None,
        replicas: int | None = None,
        aof: bool | None = None,
        exclusive_runs: bool = False,
        on_busy: OnBusy = "raise",
        lease: timedelta = DEFAULT_LEASE,
        busy_timeout: timedelta = DEFAULT_BUSY_TIMEOUT,
        offload: Offload | None = None,
        retention: Retention | None = None,
    ) -> None:
        self.exclusive = exclusive_settings(exclusive_runs, on_busy, lease, busy_timeout)
        if mode not in MODES:
            raise ConfigurationError(f"mode must be one of {MODES}, got {mode!r}")
        if not hot.outbox_enabled:
            raise ConfigurationError("DualSaver needs RedisHotSaver(..., outbox=True)")
        if max_lag < 1:
            raise ConfigurationError(f"max_lag must be at least 1, got {max_lag}")
        write_wait = _write_wait(hot, mode, replicas, aof)
        super().__init__(
            serde=serde or hot.serde,
            limits=limits or hot.limits,
            state_schema=state_schema,
            compression=hot.compression,  # from_conn_string's compression= sets both tiers'
            offload=offload or hot.offload,
        )
        self.hot = hot
        self.durable = durable
        self.hot.serde = self.durable.serde = self.serde
        self.hot.offload = self.durable.offload = self.offload
        self.mode: Mode = mode
        # Only in write_behind is Redis a write's one copy when put returns: there it
        # must be on the replicas too, or a failover could take it back.
        self.hot.wait_for_replicas = mode == "write_behind"
        self.hot.write_wait = write_wait
        self.max_lag = max_lag
        self._outbox_key = _configured_key(outbox_key)
        self.flusher = Flusher(hot, durable, flush)
        # write_through commits each record itself; its background flusher only picks
        # up what a failed commit left behind (see FlushSettings.min_age).
        self._background_flusher = (
            Flusher(hot, durable, replace(flush or FlushSettings(), min_age=_LEFTOVER_AGE))
            if mode == "write_through"
            else self.flusher
        )
        self.background_flush = background_flush
        if self._outbox_key is not None:
            self._use_key(self._outbox_key)
        self._counters = _Counters()
        self._paused_threads: set[str] = set()
        """Threads that reached an interrupt in write_behind: their next put flushes."""
        self._health = _RedisHealth()
        self._background: dict[asyncio.AbstractEventLoop, _Background] = {}
        self._reconcile_locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Lock
        ] = weakref.WeakKeyDictionary()
        self._committers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommitter] = (
            weakref.WeakKeyDictionary()
        )
        if retention is not None and not isinstance(retention, Retention):
            raise ConfigurationError(f"retention must be a Retention or None, got {retention!r}")
        self.retention = retention
        if retention is not None:
            sweeper = Sweeper(durable, retention, self._retention_side())
            for flusher in self.flushers:
                flusher.retention = sweeper

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_conn_string(
        cls,
        redis_url: str,
        postgres_url: str,
        *,
        mode: Mode = "write_behind",
        prefix: str = "dualsaver",
        schema: str | None = None,
        read_url: str | None = None,
        partitions: int | None = None,
        ttl: timedelta | None = timedelta(hours=24),
        timeouts: Timeouts | None = None,
        serde: SerializerProtocol | None = None,
        limits: Limits | None = None,
        compression: Compression | None = DEFAULT_COMPRESSION,
        offload: Offload | None = None,
        **options: Any,
    ) -> DualSaver:
        """Open both tiers from URLs; use as ``async with`` or ``with``. Closes them on exit.

        ``schema`` gives the app a PostgreSQL schema of its own, as ``prefix`` gives it
        its own Redis keys; ``asetup`` records the prefix as the schema's owner.
        ``read_url`` (a read replica) and ``partitions`` go to ``PostgresDurableSaver``.
        ``compression`` (``Compression``, or ``None``) and ``offload`` (``Offload``, or
        ``None``) apply to both tiers.
        """
        hot = RedisHotSaver(
            url=redis_url,
            prefix=prefix,
            ttl=ttl,
            outbox=True,
            timeouts=timeouts or Timeouts(),
            serde=serde,
            limits=limits,
            compression=compression,
            offload=offload,
        )
        durable = PostgresDurableSaver(
            dsn=postgres_url,
            timeouts=timeouts or Timeouts(),
            serde=serde,
            limits=limits,
            compression=compression,
            offload=offload,
            schema=schema,
            read_url=read_url,
            partitions=partitions,
        )
        return cls(hot, durable, mode=mode, **options)

    @classmethod
    def from_env(cls, *, mode: Mode | None = None, setup: bool = True, **options: Any) -> DualSaver:
        """A saver from ``DUALSAVER_REDIS_URL`` and ``DUALSAVER_POSTGRES_URL``.

        Where they are unset, the embedded servers (``pip install
        'langgraph-dualsaver[embedded]'``) are started on a per-user data directory, or
        reused if an earlier process started them. ``DUALSAVER_MODE`` picks the mode,
        ``DUALSAVER_PREFIX`` the Redis prefix and ``DUALSAVER_SCHEMA`` the PostgreSQL schema.
        ``DUALSAVER_OFFLOAD_URL`` (``file:///dir`` or ``s3://bucket/prefix``) turns
        offload on, with ``DUALSAVER_OFFLOAD_MIN_BYTES`` if set; the embedded servers
        offload to a directory beside their data unless it names another store.
        """
        redis_url = os.environ.get("DUALSAVER_REDIS_URL")
        postgres_url = os.environ.get("DUALSAVER_POSTGRES_URL")
        offload_url = os.environ.get("DUALSAVER_OFFLOAD_URL")
        if not redis_url or not postgres_url:
            from langgraph_dualsaver.embedded import shared_servers

            servers = shared_servers()
            redis_url = redis_url or servers.redis_url
            postgres_url = postgres_url or servers.postgres_url
            offload_url = offload_url or servers.offload_url
        # A value that is not a Mode is refused by __init__ (ConfigurationError).
        chosen = mode or cast(Mode, os.environ.get("DUALSAVER_MODE", "write_behind"))
        options.setdefault("prefix", os.environ.get("DUALSAVER_PREFIX", "dualsaver"))
        options.setdefault("schema", os.environ.get("DUALSAVER_SCHEMA") or None)
        if options.get("offload") is None:
            options["offload"] = env_offload(offload_url)
        saver = cls.from_conn_string(redis_url, postgres_url, mode=chosen, **options)
        if setup:
            saver.setup()
        return saver

    def home_loop(self) -> asyncio.AbstractEventLoop | None:
        return self.hot.home_loop() or self.durable.home_loop()

    async def asetup(self) -> None:
        """Migrate PostgreSQL, claim its schema for this prefix (if a schema is set),
        check Redis' eviction policy, create the consumer group."""
        await self.durable.asetup()
        await self.aclaim_schema()
        await self.hot.asetup()
        await self.flusher.setup()
        await self._drain_unauthenticated_entries()
        await self._key()

    async def aclaim_schema(self) -> None:
        """Record this saver's Redis prefix as its PostgreSQL schema's owner, or raise
        ``ConfigurationError`` if another prefix owns it: two apps in one schema would
        read and delete each other's threads. Nothing to do without a schema."""
        schema, prefix = self.durable.schema, self.hot.prefix
        if schema is None:
            return
        owner = await self.durable.aclaim_owner(prefix)
        if owner != prefix:
            raise ConfigurationError(
                f"PostgreSQL schema {schema!r} belongs to Redis prefix {owner!r}, not "
                f"{prefix!r}: two apps sharing a schema would read and delete each "
                f"other's threads. Use prefix={owner!r} for this app, or give it a schema "
                f"of its own (schema=... / DUALSAVER_SCHEMA / dualsaver --schema)"
            )

    async def _key(self) -> OutboxKey:
        """The outbox key: configured, or PostgreSQL's (read once per saver)."""
        if self._outbox_key is None:
            self._outbox_key = OutboxKey(await self.durable.aoutbox_key())
            self._use_key(self._outbox_key)
        return self._outbox_key

    def _use_key(self, key: OutboxKey) -> None:
        self.hot.outbox_key = key
        self.flusher.key = self._background_flusher.key = key

    async def _drain_unauthenticated_entries(self) -> None:
        """Entries a version before outbox authentication queued carry no tag: the
        first ``asetup`` after the upgrade flushes them (trusting them, as that version
        did) before any entry must carry one. Done once per prefix."""
        marker = f"outbox-authenticated:{self.hot.prefix}"
        if await self.durable.asetting(marker) is not None:
            return
        trusting = Flusher(self.hot, self.durable, self.flusher.settings, key=None)
        moved = await trusting.drain()
        if moved:
            logger.warning("flushed %d outbox entries queued by an earlier version", moved)
        await self.durable.aset_setting(marker, "1")

    async def aclose(self) -> None:
        """Stop the background flushers (after one last pass) and close both tiers.

        This loop's flusher is awaited; one on another loop (the sync bridge's, when
        the graph ran with ``invoke``) is told to stop there, not awaited: its loop's
        thread may be the very one waiting for this call."""
        current = asyncio.get_running_loop()
        for loop, background in list(self._background.items()):
            del self._background[loop]
            if loop is current:
                background.stop.set()
                background.wake.set()
                await background.task
            elif loop.is_running():
                loop.call_soon_threadsafe(_stop, background)
        await self.hot.aclose()
        await self.durable.aclose()

    # -- writes -----------------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        record = checkpoint_record(
            self.serde, self.limits, config, checkpoint, metadata, new_versions
        )
        claim = checkpoint_claim(self.exclusive, record.thread_id, config, checkpoint, metadata)
        await retrying(self.exclusive, lambda: self._write(record, claim))
        if record.thread_id in self._paused_threads:
            # A put that finished after the interrupt's flush began (LangGraph saves
            # checkpoints in the background): the paused state is made durable too.
            self._paused_threads.discard(record.thread_id)
            await self.aflush()
        return saved_config(record)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        record = writes_record(self.serde, self.limits, config, writes, task_id, task_path)
        if not record.writes:
            return  # nothing to store or queue
        claim = writes_claim(self.exclusive, record.thread_id, config, [w[0] for w in writes])
        await retrying(self.exclusive, lambda: self._write(record, claim))
        if self.mode == "write_behind" and any(w.channel == INTERRUPT for w in record.writes):
            # The human-in-the-loop boundary: a person may take minutes or days to
            # answer, so what led up to the question is made durable now, and so is the
            # thread's next checkpoint, whose put may still be on its way.
            self._paused_threads.add(record.thread_id)
            await self.aflush()

    async def _write(
        self, record: CheckpointRecord | WritesRecord, claim: Claim | None = None
    ) -> None:
        """Write the record; ``claim`` (exclusive runs) is checked by the store that
        takes it, in the same script or transaction."""
        entry_id = None
        if self._health.available():
            key = await self._key()
            try:
                entry_id = await self._on_hot(
                    lambda: self._enqueue(record, key, claim), repeat=False
                )
            except StoreUnavailableError as exc:
                self._health.failed(exc)
        if entry_id is None:  # Redis is down: PostgreSQL directly, in both modes
            await self._write_degraded(record, claim)
            return
        if self.mode == "write_through":
            self._wake_flusher(now=False)  # for entries a failed commit leaves behind
            await self._commit_through(record, entry_id)
        else:
            self._wake_flusher()

    async def _enqueue(
        self, record: CheckpointRecord | WritesRecord, key: OutboxKey, claim: Claim | None = None
    ) -> str:
        """Write Redis and queue the record. In write_behind a shard's outbox holds at
        most its share of ``max_lag`` (checked in the same script, so the bound holds
        whatever the number of processes): a full one is drained first (backpressure),
        and ``StoreUnavailableError`` says PostgreSQL cannot take it."""
        cap = self._shard_cap()
        try:
            return await self.hot.aenqueue(record, key, cap=cap, claim=claim)
        except OutboxFullError:
            logger.info("outbox shard full (max_lag %d): draining", self.max_lag)
            await self.aflush()
        try:
            return await self.hot.aenqueue(record, key, cap=cap, claim=claim)
        except OutboxFullError as exc:
            raise StoreUnavailableError(
                f"the outbox is at max_lag ({self.max_lag} entries) and PostgreSQL is not "
                "taking them; the write was not accepted"
            ) from exc

    def _shard_cap(self) -> int:
        if self.mode == "write_through":
            return 0  # each put commits its own record: nothing accumulates
        return max(1, self.max_lag // self.hot.shards)

    async def _write_degraded(
        self, record: CheckpointRecord | WritesRecord, claim: Claim | None = None
    ) -> None:
        """Write PostgreSQL directly, at this clock's position in outbox order (a
        ``claim`` checked against PostgreSQL's own lease and rows)."""
        refused = await self.durable.awrite_guarded([record], [clock_position()], claim=claim)
        if refused:
            raise DurableWriteError(
                f"thread {record.thread_id!r} has a delete recorded at a later position "
                "than this process's clock (is the clock behind Redis'?); the write was "
                "not accepted"
            )
        self._health.degraded_threads.add(record.thread_id)
        self._counters.degraded_writes += 1

    async def _commit_through(self, record: CheckpointRecord | WritesRecord, entry_id: str) -> None:
        """Wait for PostgreSQL to commit the record (with concurrent puts of this loop,
        in one transaction). If it fails, the entry stays queued for the flusher and the
        caller gets ``DurableWriteError``: the write was not acknowledged."""
        loop = asyncio.get_running_loop()
        committer = self._committers.get(loop)
        if committer is None:
            committer = self._committers[loop] = GroupCommitter(self.flusher.outbox, self.durable)
        await committer.commit(record, entry_id)
        self._counters.flushed += 1

    # -- flushing ---------------------------------------------------------------------

    async def aflush(self, timeout: timedelta = timedelta(seconds=30)) -> int:
        """Force the outbox through to PostgreSQL; returns the entries this call moved."""
        await self._key()
        return await self.flusher.drain(timeout)  # counted in flusher.flushed

    def flush(self, timeout: timedelta = timedelta(seconds=30)) -> int:
        return self._sync(self.aflush(timeout))

    def _wake_flusher(self, *, now: bool = True) -> None:
        """Start this loop's background flusher if needed; with ``now``, wake it."""
        if not self.background_flush:
            return
        loop = asyncio.get_running_loop()
        background = self._background.get(loop)
        if background is None or background.task.done():
            stop, wake = asyncio.Event(), asyncio.Event()
            task = loop.create_task(self._run_background(stop, wake), name="dualsaver-flusher")
            background = self._background[loop] = _Background(task, stop, wake)
        if now:
            background.wake.set()

    async def _run_background(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        await self._background_flusher.run_forever(stop, wake)
        try:  # a last pass, so a clean shutdown leaves nothing behind
            await self._background_flusher.run_once()
        except StoreUnavailableError as exc:
            logger.warning("final flush skipped: %s", exc)

    # -- reads ------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if not self.exclusive.enabled:
            return await self._read(config)
        checkpoint_ids(config, self.limits)
        await wait_until_free(self.exclusive, config, note_read(config), self._lease)
        found = await self._read(config)
        note_head(config, found)  # what the run read: its writes must land on it
        return found

    async def _read(self, config: RunnableConfig) -> CheckpointTuple | None:
        checkpoint_ids(config, self.limits)
        if self._health.available():
            try:
                found = await self._on_hot(lambda: self.hot.aget_tuple(config), repeat=True)
            except StoreUnavailableError as exc:
                self._health.failed(exc)
            else:
                if found is not None:
                    self._counters.hot_hits += 1
                    return found
                self._counters.hot_misses += 1
                records = await self.durable.aload_records(config)
                found = records_tuple(self.serde, records)
                if found is not None and not config["configurable"].get("checkpoint_id"):
                    await self._backfill(records)
                return found
        self._counters.degraded_reads += 1
        return await self.durable.aget_tuple(config)

    async def _lease(self, thread_id: str) -> tuple[str, int] | None:
        """The thread's live lease, where writes are checked now: Redis, or PostgreSQL
        while Redis is down."""
        if self._health.available():
            try:
                return await self.hot.alease(thread_id)
            except StoreUnavailableError as exc:
                self._health.failed(exc)
        return await self.durable.alease(thread_id)

    async def _backfill(self, records: Sequence[CheckpointRecord | WritesRecord]) -> None:
        """Put a thread's latest checkpoint, as PostgreSQL holds it, back into Redis.
        One beyond this saver's limits (say, an older database written under larger
        ones) stays in PostgreSQL only: logged and counted in ``backfills_skipped``."""
        try:
            await self.hot.abackfill(records, self.limits)
            self._counters.backfills += 1
        except InvalidInputError as exc:
            logger.warning("not putting %r back into Redis: %s", records[0].thread_id, exc)
            self._counters.backfills_skipped += 1
        except StoreUnavailableError as exc:
            self._health.failed(exc)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncGenerator[CheckpointTuple, None]:
        """The union of both tiers, newest first, without duplicates (the hot copy wins:
        it can carry writes not yet flushed). Both tiers stream in pages, merged as
        they go: memory holds a page per tier, and the first item comes after one."""
        list_arguments(config, filter, before, limit, self.limits)
        if limit is not None and limit <= 0:
            return
        durable = self.durable.alist(config, filter=filter, before=before, limit=limit)
        hot = self._hot_listing(config, filter, before, limit)
        async with aclosing(durable), aclosing(hot), aclosing(_merged(hot, durable)) as merged:
            count = 0
            async for item in merged:
                yield item
                count += 1
                if count == limit:
                    return

    async def _hot_listing(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> AsyncGenerator[CheckpointTuple, None]:
        """Redis' part of ``alist``. If a connection was opened meanwhile (the server may
        have restarted from an old snapshot), it reconciles, then resumes after the last
        item yielded; if Redis fails, it ends, and the listing goes on from PostgreSQL."""
        if not self._health.available():
            return
        after: ListKey | None = None
        left = limit
        try:
            while left is None or left > 0:
                await self._reconcile_if_needed()
                opened = self.hot.connections_opened
                found = list_checkpoints(self.hot, config, filter, before, left, after=after)
                async with aclosing(found):
                    async for item in found:
                        if self.hot.connections_opened != opened:
                            break
                        self._health.down_since = None
                        yield item
                        after = list_key(item)
                        left = None if left is None else left - 1
                if self.hot.connections_opened == opened:
                    self._health.down_since = None
                    return
        except StoreUnavailableError as exc:
            self._health.failed(exc)
            self._counters.degraded_reads += 1

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """PostgreSQL holds every ancestor (Redis may hold only the recent ones), so the
        history is read there, after the outbox is through."""
        if not channels:
            return {}
        await self.aflush()
        return await self.durable.aget_delta_channel_history(config=config, channels=channels)

    # -- lifecycle --------------------------------------------------------------------

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete a thread in both tiers. A flush still queued never brings it back:
        PostgreSQL keeps a tombstone at the deletion's outbox position, which refuses
        what was queued before it and leaves alone what is written after it."""
        validate_id("thread_id", thread_id, self.limits)
        if self._health.available():
            key = await self._key()
            try:
                entry_id = await self._on_hot(
                    lambda: self.hot.adelete_thread(thread_id, key=key), repeat=False
                )
            except StoreUnavailableError as exc:
                self._health.failed(exc)
            else:
                assert entry_id is not None
                await self.durable.adelete_thread(thread_id, tombstone_seq=position(entry_id))
                await self.flusher.outbox.discard([(thread_id, entry_id)])
                return
        # Redis is down: PostgreSQL at this clock's position, which is past every entry
        # Redis queued before it went away (all older than this moment).
        deleted_at = clock_position() - 1  # a write later in this millisecond comes after
        await self.durable.adelete_thread(thread_id, tombstone_seq=deleted_at)
        self._health.deleted_threads[thread_id] = deleted_at
        self._health.degraded_threads.discard(thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        run_ids = run_ids_argument(run_ids)  # before the flush touches anything
        await self.aflush()
        await self.durable.adelete_for_runs(run_ids)
        await self.hot.adelete_for_runs(run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        validate_id("thread_id", source_thread_id, self.limits)
        validate_id("thread_id", target_thread_id, self.limits)
        await self.aflush()
        await self.durable.acopy_thread(source_thread_id, target_thread_id)
        await self.hot.acopy_thread(source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune PostgreSQL, then Redis: a checkpoint leaves Redis only once durable."""
        prune_arguments(thread_ids, strategy, self.limits)  # before the flush touches anything
        await self.aflush()
        await self.durable.aprune(thread_ids, strategy=strategy)
        await self.hot.aprune(thread_ids, strategy=strategy)

    async def aretain(
        self, policy: Retention | None = None, *, dry_run: bool = False
    ) -> RetentionReport:
        """Apply a retention policy (``policy``, else this saver's ``retention``) to
        every thread now, after flushing the outbox: PostgreSQL in bounded transactions,
        then Redis (``chain.retention``). With ``dry_run`` nothing changes and the
        report says what would go."""
        chosen = policy or self.retention
        if chosen is None:
            raise ConfigurationError("no retention policy: pass one, or build with retention=")
        await self._key()
        await self.aflush()
        return await sweep(self.durable, chosen, dry_run=dry_run, hot=self._retention_side())

    def retain(self, policy: Retention | None = None, *, dry_run: bool = False) -> RetentionReport:
        return self._sync(self.aretain(policy, dry_run=dry_run))

    def _retention_side(self) -> ChainHotSide:
        return ChainHotSide(self.hot, self.durable, self.flusher.outbox)

    # -- degraded mode ----------------------------------------------------------------

    async def _on_hot(self, call: Callable[[], Awaitable[T]], *, repeat: bool) -> T:
        """Run a Redis call on a Redis known to serve nothing stale.

        The connection it ran on may have been opened during the call (redis-py
        reconnects once after a dropped connection), to a server that restarted from an
        old snapshot: then reconcile, and with ``repeat`` (reads), ask again.
        """
        await self._reconcile_if_needed()
        opened = self.hot.connections_opened
        result = await call()
        if self.hot.connections_opened != opened:
            await self._reconcile_if_needed()
            if repeat:
                result = await call()
        self._health.down_since = None
        return result

    async def _reconcile_if_needed(self) -> None:
        """Make sure Redis serves nothing stale: after it was unreachable, and whenever a
        new connection was opened (the server behind it may have restarted, perhaps
        from an old snapshot). Costs one round trip per new connection."""
        if not self._reconcile_due():
            return
        loop = asyncio.get_running_loop()
        lock = self._reconcile_locks.get(loop)
        if lock is None:
            lock = self._reconcile_locks[loop] = asyncio.Lock()
        async with lock:  # concurrent first calls: one checks, the others wait for it
            if self._reconcile_due():
                await self._reconcile()

    def _reconcile_due(self) -> bool:
        health = self._health
        return health.needs_reconcile or self.hot.connections_opened != health.connections_seen

    async def _reconcile(self) -> None:
        identity = await self.hot.aserver_identity()
        if identity != "same":
            if identity == "changed":
                logger.warning(
                    "Redis restarted; evicting every hot thread before serving it, so "
                    "an old snapshot cannot serve a stale latest"
                )
            else:
                logger.info("first use of this Redis for prefix %r", self.hot.prefix)
            await self.aflush()
            await self.hot.aevict_all_threads()
            await self.hot.arecord_server_identity()
        elif self._health.degraded_threads or self._health.deleted_threads:
            for thread_id, position in sorted(self._health.deleted_threads.items()):
                await self.hot.adrop_thread(thread_id, born_by=position)
            await self.aflush()
            for thread_id in sorted(self._health.degraded_threads):
                await self.hot.aevict_thread(thread_id)
        self._health.degraded_threads.clear()
        self._health.deleted_threads.clear()
        self._health.needs_reconcile = False
        self._health.connections_seen = self.hot.connections_opened
        if self._health.down_since is not None:
            logger.warning("Redis is reachable again")

    # -- introspection ----------------------------------------------------------------

    async def astats(self) -> DualStats:
        length = oldest = dead = None
        try:
            outbox = self.flusher.outbox
            length = await outbox.length()
            oldest = await outbox.oldest_age_s()
            dead = await outbox.dead_letter_count()
        except StoreUnavailableError as exc:
            self._health.failed(exc)
        counts = self.counts()
        return DualStats(
            **{f.name: getattr(counts, f.name) for f in fields(ProcessCounts)},
            mode=self.mode,
            outbox_length=length,
            oldest_pending_age_s=oldest,
            dead_letters=dead,
            flushed=self._counters.flushed
            + self.flusher.flushed
            + (self._background_flusher.flushed if self.mode == "write_through" else 0),
            refused=sum(f.refused for f in self.flushers),
            redis_available=counts.redis_down_for_s is None,
        )

    def counts(self) -> ProcessCounts:
        """This process's counters, without touching a store."""
        c = self._counters
        down_since = self._health.down_since
        return ProcessCounts(
            hot_hits=c.hot_hits,
            hot_misses=c.hot_misses,
            backfills=c.backfills,
            backfills_skipped=c.backfills_skipped,
            degraded_reads=c.degraded_reads,
            degraded_writes=c.degraded_writes,
            redis_down_for_s=None if down_since is None else time.monotonic() - down_since,
        )

    @property
    def flushers(self) -> tuple[Flusher, ...]:
        """This process's flushers: ``aflush``'s and the background one (in write_behind
        the same)."""
        return tuple({self.flusher: None, self._background_flusher: None})

    def stats(self) -> DualStats:
        return self._sync(self.astats())

    async def alag(self) -> int:
        """Outbox entries not yet durable in PostgreSQL."""
        return await (self.flusher.outbox).length()

    def lag(self) -> int:
        return self._sync(self.alag())

    async def aaudit(self, thread_id: str) -> list[Any]:
        """The audit trail from PostgreSQL, after the outbox is through."""
        await self.aflush()
        return await self.durable.aaudit(thread_id)

    def audit(self, thread_id: str) -> list[Any]:
        return self._sync(self.aaudit(thread_id))

    def with_allowlist(self, extra_allowlist: Any) -> DualSaver:
        """Unlike the base implementation, the allowlist reaches both inner savers. The
        copy is the same chain decoding more types: it shares the connections, health,
        counters and flushers (LangGraph makes one when it compiles a graph)."""
        clone = super().with_allowlist(extra_allowlist)
        if clone is self:
            return self
        clone.hot = self.hot.with_allowlist(extra_allowlist)
        clone.durable = self.durable.with_allowlist(extra_allowlist)
        clone.hot.serde = clone.durable.serde = clone.serde
        return clone


async def _merged(
    hot: AsyncIterator[CheckpointTuple], durable: AsyncIterator[CheckpointTuple]
) -> AsyncGenerator[CheckpointTuple, None]:
    """Two listings, each in list order, as one in list order; a checkpoint in both
    comes once, from ``hot``."""
    d = await anext(durable, None)
    h = await anext(hot, None)
    while h is not None or d is not None:
        if h is not None and (d is None or not comes_after(list_key(h), list_key(d))):
            if d is not None and list_key(d) == list_key(h):
                d = await anext(durable, None)
            yield h
            h = await anext(hot, None)
        else:
            assert d is not None
            yield d
            d = await anext(durable, None)


def _stop(background: _Background) -> None:
    background.stop.set()
    background.wake.set()


def _configured_key(key: OutboxKey | str | None) -> OutboxKey | None:
    """The outbox key given, or ``DUALSAVER_OUTBOX_KEY``, or ``None`` (PostgreSQL's)."""
    if isinstance(key, OutboxKey):
        return key
    text = key if key is not None else os.environ.get("DUALSAVER_OUTBOX_KEY")
    return OutboxKey.from_text(text) if text else None


def _write_wait(
    hot: RedisHotSaver, mode: Mode, replicas: int | None, aof: bool | None
) -> WriteWait:
    """The hot tier's wait with ``replicas`` and ``aof`` applied; refused in
    write_through, where a put is acknowledged after PostgreSQL's COMMIT."""
    wait = hot.write_wait.updated(replicas, aof)
    if mode == "write_through" and wait.waits:
        raise ConfigurationError(
            f"{wait.describe()} is for write_behind: write_through acknowledges a put only "
            "after PostgreSQL's COMMIT, so waiting for Redis replicas or its AOF would add "
            "latency and no durability"
        )
    return wait
