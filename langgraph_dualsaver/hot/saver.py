"""``RedisHotSaver``: the hot tier, on plain Redis >= 6.2 or Valkey >= 7.2.

One round trip each for ``put``, ``put_writes`` and ``get_tuple`` of the latest
checkpoint (Lua scripts in ``hot.scripts``); the key layout is in ``hot.keys``, the
records in ``records``; listing is in ``hot.listing``; deletes, copies, pruning and the
delta-channel walk are in ``hot.admin``. A thread's keys share one expiry, sliding
on write and, with ``refresh_on_read``, on read. With ``outbox=True`` every write is
also queued on the shard's outbox stream for the chain's flusher, and the thread keeps
no expiry until the flusher's acknowledgement (``Outbox.ack``) counts its records durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from datetime import timedelta
from typing import Any, Literal, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from redis import exceptions as rex
from redis.asyncio.cluster import RedisCluster

from langgraph_dualsaver._base import AsyncFirstSaver
from langgraph_dualsaver.chain.outbox import OutboxKey, entry_id_at, record_fields
from langgraph_dualsaver.compression import DEFAULT_COMPRESSION, Compression
from langgraph_dualsaver.errors import (
    ConfigurationError,
    DualSaverError,
    UnsafeRedisConfigError,
)
from langgraph_dualsaver.hot import admin as admin
from langgraph_dualsaver.hot import cluster_wait as cluster_replicas
from langgraph_dualsaver.hot import listing as listing
from langgraph_dualsaver.hot import write_wait as durability
from langgraph_dualsaver.hot.connection import Client, RedisConnection
from langgraph_dualsaver.hot.keys import (
    DEFAULT_PREFIX,
    DEFAULT_SHARDS,
    ThreadKeys,
    checkpoint_tuple,
    cluster_server_keys,
    cp_field,
    latest_range,
    pairs,
    registry_key,
    server_key,
    shard_of,
    shard_registry_key,
    text,
    thread_keys,
    utf8,
    validate_prefix,
)
from langgraph_dualsaver.hot.scripts import (
    DROP,
    LEASE,
    LOAD,
    STORE,
    Script,
    store_claim_args,
    store_item_args,
    stored_entry_ids,
)
from langgraph_dualsaver.offload.store import Offload
from langgraph_dualsaver.records import (
    CheckpointRecord,
    Limits,
    WritesRecord,
    checkpoint_ids,
    checkpoint_record,
    saved_config,
    validate_id,
    writes_record,
)
from langgraph_dualsaver.runs import (
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_LEASE,
    Claim,
    OnBusy,
    checkpoint_claim,
    exclusive_settings,
    note_head,
    note_read,
    refusal,
    retrying,
    wait_until_free,
    writes_claim,
)
from langgraph_dualsaver.settings import Timeouts
from langgraph_dualsaver.state_upgrades import StateSchema

__all__ = ["OutboxFullError", "RedisHotSaver"]

log = logging.getLogger(__name__)


class OutboxFullError(DualSaverError):
    """A record's outbox stream is at its cap; nothing was written (``DualSaver``
    drains the outbox and tries again: backpressure)."""


_DEFAULT_TIMEOUTS = Timeouts()

_SLOT_IDENTITY = r"""
-- KEYS[1]: a slot's server record. ARGV[1]: '' to read it; a run_id (or '*': any) to
-- record this master's run_id first, if it is that one. Returns {record, run_id}.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if ARGV[1] == '*' or ARGV[1] == run_id then
  redis.call('SET', KEYS[1], run_id)
end
return {redis.call('GET', KEYS[1]), run_id}
"""


class RedisHotSaver(AsyncFirstSaver):
    """A LangGraph checkpointer on Redis or Valkey (no modules), sync and async.

    Args:
        client: A ``redis.asyncio.Redis`` or ``RedisCluster`` (``decode_responses``
            off). The caller owns it; it is never closed here.
        url: Or a URL: ``redis://``, ``rediss://``, or ``redis+cluster://`` /
            ``rediss+cluster://`` (or ``cluster=True``) for Redis Cluster. The saver then
            opens one client per event loop and closes them in ``aclose``.
        prefix: Prefix of every key; no ``{``, ``}`` or NUL.
        ttl: Sliding expiry of a thread (all its keys together). ``None``: never expires.
        refresh_on_read: Reads restart the ttl too.
        shards: Hash-tag shards (and outbox streams) the threads are spread over.
        outbox: Queue every write on the shard's outbox stream, for ``DualSaver``.
        max_connections: Connections per event loop; past them a call waits for one.
        timeouts: Connect and command timeouts; past them ``StoreUnavailableError``.
        replicas: A put counts once this many replicas hold it (``WAIT``, at most half
            the command timeout; fewer and it raises ``StoreUnavailableError``). ``None``:
            on Redis Cluster every replica of the master for queued writes, else none
            (``hot.write_wait.WriteWait``).
        aof: A put counts once the master's append-only file has fsynced it too
            (``WAITAOF 1 0``; needs ``appendonly yes``).
        exclusive_runs: One run per thread at a time (``runs``): a second run's write
            raises ``ThreadBusyError`` and writes nothing. Off by default.
        on_busy: ``"raise"``, or ``"wait"`` (up to ``busy_timeout``) for the holder.
        lease: How long a run holds its thread past its last write (a crashed run
            blocks it that long): longer than the longest step.
        compression: how values are compressed (``Compression``; ``None``: not at all).
        offload: values stored as this many bytes or more go to an object store
            (``Offload``); Redis keeps a reference.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        ttl: timedelta | None = None,
        refresh_on_read: bool = False,
        shards: int = DEFAULT_SHARDS,
        outbox: bool = False,
        cluster: bool = False,
        max_connections: int = 100,
        timeouts: Timeouts = _DEFAULT_TIMEOUTS,
        serde: SerializerProtocol | None = None,
        limits: Limits | None = None,
        state_schema: StateSchema | None = None,
        replicas: int | None = None,
        aof: bool = False,
        compression: Compression | None = DEFAULT_COMPRESSION,
        exclusive_runs: bool = False,
        on_busy: OnBusy = "raise",
        lease: timedelta = DEFAULT_LEASE,
        busy_timeout: timedelta = DEFAULT_BUSY_TIMEOUT,
        offload: Offload | None = None,
    ) -> None:
        super().__init__(
            serde=serde,
            limits=limits,
            state_schema=state_schema,
            compression=compression,
            offload=offload,
        )
        self.exclusive = exclusive_settings(exclusive_runs, on_busy, lease, busy_timeout)
        """Exclusive runs (``runs``); the chain passes its own claims instead."""
        self.write_wait = durability.WriteWait(replicas, aof)
        """What a put waits for before it counts (``DualSaver`` may set it)."""
        self.prefix = validate_prefix(prefix)
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise ConfigurationError(f"shards must be a positive int, got {shards!r}")
        if ttl is not None and (not isinstance(ttl, timedelta) or ttl < timedelta(milliseconds=1)):
            raise ConfigurationError(
                f"ttl must be a timedelta of 1 ms or more, or None; got {ttl!r}"
            )
        self.ttl = ttl
        self.refresh_on_read = refresh_on_read
        self.shards = shards
        self.outbox = outbox
        self.timeouts = timeouts
        self.max_connections = max_connections
        self.partial_reads = 0
        """Reads that found half a thread (an evicted key) and treated it as absent."""
        self.wait_for_replicas = True
        """On Redis Cluster, a queued write counts only once every replica of its master
        has it (``WAIT``), so a failover cannot take it back; else
        ``StoreUnavailableError``. ``DualSaver`` turns it off in write_through, where
        PostgreSQL has each write before it is acknowledged; off, ``write_wait`` is
        ignored too."""
        self._replica_counts = cluster_replicas.ReplicaCounts()
        self.ttl_ms = ttl // timedelta(milliseconds=1) if ttl is not None else 0
        """``ttl`` in milliseconds, as the scripts take it (0: no expiry)."""
        self._run_id: str | None = None
        self.outbox_key: OutboxKey | None = None
        """Signs queued entries (``DualSaver`` sets it); without one they carry no tag."""
        self._seen_run_ids: dict[str, str] = {}
        self.conn = RedisConnection(
            client, url=url, cluster=cluster, max_connections=max_connections, timeouts=timeouts
        )
        """The connection every Redis call of the tier (and the chain's outbox) goes through."""

    @classmethod
    def from_conn_string(cls, url: str, **options: Any) -> RedisHotSaver:
        """``async with RedisHotSaver.from_conn_string(url) as saver`` (or ``with``)."""
        return cls(url=url, **options)

    @property
    def outbox_enabled(self) -> bool:
        return self.outbox

    # -- clients ------------------------------------------------------------------

    def home_loop(self) -> asyncio.AbstractEventLoop | None:
        return self.conn.home_loop

    async def aclient(self) -> Client:
        """The client for the running event loop."""
        return await self.conn.client()

    @property
    def connections_opened(self) -> int:
        """Connections opened so far: the chain re-checks the server after each."""
        return self.conn.connections_opened

    async def aclose(self) -> None:
        await self.conn.aclose()

    async def _eval_replicated(
        self, script: Script, keys: Sequence[str], args: Sequence[Any], *, queued: bool
    ) -> Any:
        """``conn.eval`` for a write to acknowledge, then on the same connection wait as
        ``write_wait`` says (``hot.write_wait``). On Redis Cluster, a queued write
        waits for every replica of its master unless ``write_wait`` names a number
        (``hot.cluster_wait``). Nothing waits without ``wait_for_replicas``."""
        wait = self.write_wait
        if not (self.wait_for_replicas and (queued or wait.explicit)):
            return await self.conn.eval(script, keys, args)
        wait_ms = max(1, int(self.timeouts.command_s * 500))  # inside the read timeout
        if not self.conn.cluster:
            return await durability.write_and_wait(self.conn, script, keys, args, wait, wait_ms)
        client = await self.conn.client()
        assert isinstance(client, RedisCluster)
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        counts = self._replica_counts
        replicas, aof = wait.replicas, wait.aof
        with self.conn.errors():
            try:
                return await cluster_replicas.write_and_wait(
                    client, keys[0], command, wait_ms, counts, replicas=replicas, aof=aof
                )
            except rex.NoScriptError:
                await self.conn.load_scripts(client)
                return await cluster_replicas.write_and_wait(
                    client, keys[0], command, wait_ms, counts, replicas=replicas, aof=aof
                )

    def found_whole(self, thread_id: str, reply: list[Any]) -> bool:
        """Whether a reading script (LOAD, CHAIN, DUMP) found the thread whole. Half a
        thread (``partial``: a key was evicted) reads as absent, counted in
        ``partial_reads`` and logged."""
        if reply[0] == b"partial":
            self._note_partial_read(thread_id)
        return bool(reply[0] == b"ok")

    def _note_partial_read(self, thread_id: str) -> None:
        self.partial_reads += 1
        log.warning(
            "thread %r in redis at %s is missing keys (evicted?); treated as absent",
            thread_id[:200],
            self.conn.where,
        )

    # -- layout -------------------------------------------------------------------

    def thread_keys(self, thread_id: str) -> ThreadKeys:
        return thread_keys(self.prefix, self.shards, thread_id)

    def shard_of(self, thread_id: str) -> int:
        return shard_of(thread_id, self.shards)

    def registry_keys(self) -> list[str]:
        """Every shard's registry of threads, then the single one of earlier versions."""
        shards = [shard_registry_key(self.prefix, shard) for shard in range(self.shards)]
        return [*shards, registry_key(self.prefix)]

    # -- setup --------------------------------------------------------------------

    async def asetup(self) -> None:
        """Check the server (version, eviction policy) and load the scripts. Idempotent."""
        client = await self.aclient()
        with self.conn.errors():
            info = await client.info("server")
            version_text = str(info.get("redis_version", "0"))
            if tuple(int(p) for p in version_text.split(".")[:2]) < (6, 2):
                raise ConfigurationError(
                    f"redis at {self.conn.where} is version {version_text}; "
                    "RedisHotSaver needs Redis >= 6.2 or Valkey >= 7.2"
                )
            self._run_id = text(info.get("run_id", ""))
            await self._check_eviction_policy(client)
            await durability.check_server(self.conn, self.write_wait)
            await self.conn.load_scripts(client)

    async def _check_eviction_policy(self, client: Client) -> None:
        try:
            if self.conn.cluster:
                replies = cast(  # one {name: value} per node, as redis-py's types do not say
                    "dict[str, Any]",
                    await client.config_get(
                        "maxmemory-policy", target_nodes=RedisCluster.PRIMARIES
                    ),
                )
                if not all(isinstance(r, dict) for r in replies.values()):
                    replies = {"the one master": replies}  # redis-py unwraps a single node's
                policies = {text(v) for reply in replies.values() for v in reply.values()}
            else:
                reply = cast(  # redis-py decodes CONFIG GET; a known parameter has a value
                    "dict[str, str]", await client.config_get("maxmemory-policy")
                )
                policies = {text(v) for v in reply.values()}
        except rex.ResponseError as exc:
            log.warning(
                "cannot read maxmemory-policy of redis at %s (%s); make sure it is "
                "noeviction or volatile-*, never allkeys-*",
                self.conn.where,
                exc,
            )
            return
        for policy in sorted(policies):
            if durability.evicts_unexpiring_keys(policy):
                raise UnsafeRedisConfigError(
                    f"redis at {self.conn.where} has maxmemory-policy {policy}, which can evict "
                    "checkpoints and outbox entries that are not durable yet; set "
                    "maxmemory-policy to noeviction (or volatile-lru / volatile-ttl, with care)"
                )

    async def aserver_identity(self) -> Literal["same", "new", "changed"]:
        """``"same"``: the recorded server; ``"new"``: nothing recorded under this
        prefix yet; ``"changed"``: another run_id (the server restarted).

        On Redis Cluster every slot holding this prefix's data (each shard's, the
        registry's) keeps its own record, on the master serving it, and the answer is
        ``"changed"`` unless each still names that master: so a master restarted from
        an old snapshot is caught whichever it is. A failover counts as a change too:
        replication is asynchronous, so a promoted replica may miss the last acknowledged
        writes (a stale latest), and nothing left on it tells a caught-up replica apart.
        Resharding also shows as a change. Each costs a flush and a cold hot tier, never
        data."""
        if self.conn.cluster:
            return await self._cluster_identity()
        client = await self.aclient()
        with self.conn.errors():
            info = await client.info("server")
            recorded = await client.get(server_key(self.prefix))
        self._run_id = text(info.get("run_id", ""))
        if recorded is None:
            return "new"
        return "same" if text(recorded) == self._run_id else "changed"

    async def arecord_server_identity(self) -> None:
        """Record the current server as the one the hot data is good on. On Redis
        Cluster, per slot, and only where the master is still the one the last
        ``aserver_identity`` saw: a master restarted since stays "changed"."""
        if self.conn.cluster:
            await self._cluster_identity_round(record=True)
            return
        client = await self.aclient()
        with self.conn.errors():
            info = await client.info("server")
            await client.set(server_key(self.prefix), text(info.get("run_id", "")))

    async def _cluster_identity(self) -> Literal["same", "new", "changed"]:
        seen = await self._cluster_identity_round(record=False)
        if all(recorded is None for recorded, _ in seen.values()):
            return "new"
        current = all(recorded == run_id for recorded, run_id in seen.values())
        return "same" if current else "changed"

    async def _cluster_identity_round(self, *, record: bool) -> dict[str, tuple[str | None, str]]:
        """Each slot's ``(recorded run_id, run_id of the master serving it)``, read in one
        script on that master (so both come from the same node). With ``record``, first
        set the record where that master is the one seen last time (or none was seen)."""
        keys = cluster_server_keys(self.prefix, self.shards)

        def build(pipe: Any) -> None:
            for key in keys:
                expected = self._seen_run_ids.get(key, "*") if record else ""
                pipe.execute_command("EVAL", _SLOT_IDENTITY, 1, key, expected)

        replies = await self.conn.pipeline(build)
        seen = {
            key: (None if recorded is None else text(recorded), text(run_id))
            for key, (recorded, run_id) in zip(keys, replies, strict=True)
        }
        self._seen_run_ids = {key: run_id for key, (_, run_id) in seen.items()}
        return seen

    # -- writes -------------------------------------------------------------------

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
        await retrying(
            self.exclusive,
            lambda: self.astore_records(
                record.thread_id, [record], enqueue=self.outbox, acknowledge=True, claim=claim
            ),
        )
        return saved_config(record)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        record = writes_record(self.serde, self.limits, config, writes, task_id, task_path)
        claim = writes_claim(self.exclusive, record.thread_id, config, [w[0] for w in writes])
        await retrying(
            self.exclusive,
            lambda: self.astore_records(
                record.thread_id, [record], enqueue=self.outbox, acknowledge=True, claim=claim
            ),
        )

    async def aput_record(
        self, record: CheckpointRecord | WritesRecord, *, enqueue: bool
    ) -> str | None:
        """Store a record as it is: the chain's writes (``enqueue=True``: also queued,
        returns the outbox entry id) or a backfill from PostgreSQL (``enqueue=False``)."""
        ids = await self.astore_records(record.thread_id, [record], enqueue=enqueue)
        return ids[0] if ids else None

    async def abackfill(
        self, records: Sequence[CheckpointRecord | WritesRecord], limits: Limits | None = None
    ) -> None:
        """Put records read elsewhere (PostgreSQL's ``aload_records``) back in Redis as
        they are, unqueued, in one script: no value is decoded or serialized again.
        Records beyond ``limits`` (this saver's by default) raise ``InvalidIdError`` or
        ``CheckpointTooLargeError`` and nothing is stored."""
        admin.check_limits(records, limits or self.limits)
        if records:
            await self.astore_records(records[0].thread_id, records, enqueue=False)

    async def astore_records(
        self,
        thread_id: str,
        records: Sequence[CheckpointRecord | WritesRecord],
        *,
        enqueue: bool,
        cap: int = 0,
        acknowledge: bool = False,
        claim: Claim | None = None,
    ) -> list[str]:
        """Store records of one thread as they are, in one script; with ``enqueue``, also
        queue each (signed with ``outbox_key``) and return their entry ids. ``cap``: see
        ``aenqueue``. A write to acknowledge (``enqueue`` or ``acknowledge``) waits as
        ``write_wait`` says; a backfill does not. A ``claim`` the thread's lease refuses
        raises ``ThreadBusyError``, and nothing is stored."""
        records = [r for r in records if not (isinstance(r, WritesRecord) and not r.writes)]
        if not records:
            return []
        tk = self.thread_keys(thread_id)
        now = time.time()
        args: list[Any] = [utf8(thread_id), self.ttl_ms, int(enqueue), cap, now, len(records)]
        args += store_claim_args(claim)
        for record in records:
            fields = record_fields(record, self.outbox_key) if enqueue else (b"", b"")
            args += store_item_args(record, *fields)
        if enqueue or acknowledge:  # a put (or the chain's queued write): it may wait
            ids = await self._eval_replicated(STORE, tk.all, args, queued=enqueue)
        else:  # a backfill of what PostgreSQL holds
            ids = await self.conn.eval(STORE, tk.all, args)
        if ids == [b"full"]:
            raise OutboxFullError(f"the outbox stream {tk.outbox!r} holds {cap} entries")
        if claim is not None and (refused := refusal(thread_id, ids)) is not None:
            raise refused
        return stored_entry_ids(ids, len(records) if enqueue else 0, self.conn.where)

    async def aenqueue(
        self,
        record: CheckpointRecord | WritesRecord,
        key: OutboxKey,
        *,
        cap: int = 0,
        claim: Claim | None = None,
    ) -> str:
        """Store a record and queue it, signed with ``key``, in one script; return its
        entry id. With ``cap``, raise ``OutboxFullError`` (writing nothing) if the
        record's outbox stream already holds ``cap`` entries; a refused ``claim`` raises
        ``ThreadBusyError``, writing nothing."""
        self.outbox_key = key
        ids = await self.astore_records(
            record.thread_id, [record], enqueue=True, cap=cap, claim=claim
        )
        return ids[0]

    async def alease(self, thread_id: str) -> tuple[str, int] | None:
        """The thread's live lease (exclusive runs): ``(holder, ms left)``, or ``None``."""
        reply = await self.conn.eval(LEASE, self.thread_keys(thread_id).data, [])
        return (text(reply[0]), int(reply[1])) if reply else None

    # -- reads --------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, ns, checkpoint_id = checkpoint_ids(config, self.limits)
        if self.exclusive.enabled:
            await wait_until_free(self.exclusive, config, note_read(config), self.alease)
        if checkpoint_id is not None:
            args = [b"fields", cp_field(ns, checkpoint_id)]
        else:
            args = [b"latest", *latest_range(ns)]
        tk = self.thread_keys(thread_id)
        reply = await self.conn.eval(LOAD, tk.data, self.load_arguments(thread_id, *args))
        found = self.loaded_tuples(thread_id, reply)
        latest = found[0] if found else None
        if self.exclusive.enabled:
            note_head(config, latest)
        return latest

    def load_arguments(self, thread_id: str, *selection: Any) -> list[Any]:
        """The LOAD script's ARGV for the thread: ``selection`` is ``b"latest", max,
        min`` or ``b"fields", *cp fields``; with ``refresh_on_read`` it restarts the ttl."""
        return [utf8(thread_id), self.ttl_ms if self.refresh_on_read else 0, *selection]

    def loaded_tuples(self, thread_id: str, reply: list[Any]) -> list[CheckpointTuple]:
        """The checkpoints of a LOAD reply (none when the thread is absent or partial)."""
        if not self.found_whole(thread_id, reply):
            return []
        _, items, flat = reply
        blobs = pairs(flat)
        return [
            checkpoint_tuple(self.serde, thread_id, field, stored, writes, blobs)
            for field, stored, writes in items
        ]

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncGenerator[CheckpointTuple, None]:
        """Newest first; ``config=None`` (or no thread_id) lists every thread, and no
        ``checkpoint_ns`` every namespace. ``filter`` is JSONB ``@>`` on the metadata."""
        async with aclosing(listing.list_checkpoints(self, config, filter, before, limit)) as found:
            async for item in found:
                yield item

    async def athread_info(self, thread_id: str) -> dict[str, Any]:
        """The thread's keys with their TTL in ms (-1: no expiry, -2: missing), its
        checkpoint count and its pending (not yet durable) count."""
        validate_id("thread_id", thread_id, self.limits)
        tk = self.thread_keys(thread_id)

        def build(pipe: Any) -> None:
            for key in tk.data:
                pipe.pttl(key)
            pipe.hlen(tk.cp)
            pipe.hget(tk.meta, "pending")

        *ttls, count, pending = await self.conn.pipeline(build)
        return {
            "thread_id": thread_id,
            "shard": tk.shard,
            "keys": dict(zip(tk.data, ttls, strict=True)),
            "checkpoints": count,
            "pending": int(pending or 0),
            "outbox": tk.outbox,
        }

    # -- deletes, copies, pruning, delta channels (hot.admin) ----------------------

    async def adelete_thread(  # type: ignore[override]
        self, thread_id: str, *, key: OutboxKey | None = None
    ) -> str | None:
        """Delete the thread. With ``outbox``, also queue a tombstone (field ``d``, signed
        with ``key``) in the same script and return its entry id, so the flusher deletes
        it durably."""
        validate_id("thread_id", thread_id, self.limits)
        if key is not None:
            self.outbox_key = key
        return (await admin.delete_threads(self, [thread_id], tombstone=self.outbox))[0]

    async def adrop_thread(self, thread_id: str, *, born_by: int) -> None:
        """Drop a thread deleted (in PostgreSQL) while Redis was down, at position
        ``born_by``: its hot copy goes, queued entries and all, unless it began after
        that position. No tombstone (PostgreSQL has one)."""
        keys = self.thread_keys(thread_id).data
        args = [utf8(thread_id), entry_id_at(born_by)]
        if await self.conn.eval(DROP, keys, args):
            with self.conn.errors():
                registry = self.thread_keys(thread_id).registry
                await (await self.aclient()).zrem(registry, utf8(thread_id))

    async def aevict_thread(self, thread_id: str) -> None:
        """Drop the thread's hot copy only (no tombstone: it stays in PostgreSQL)."""
        validate_id("thread_id", thread_id, self.limits)
        await admin.evict_threads(self, [thread_id])

    async def aevict_all_threads(self) -> None:
        """Drop every registered thread's hot copy (no tombstones)."""
        await admin.evict_threads(self, await listing.registered_threads(self))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await admin.delete_for_runs(self, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await admin.copy_thread(self, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await admin.prune(self, thread_ids, strategy)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await admin.delta_channel_history(self, config, channels)
