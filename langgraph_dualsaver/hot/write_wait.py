"""What a write waits for before Redis counts it as done: replicas (``WAIT``) and the
append-only file (``WAITAOF``).

Redis answers a write once it is in the master's memory; replication and the AOF's
fsync come after. A write acknowledged then is lost if the master dies before a replica
has it (a promoted replica serves on without it), or if every node loses its memory
before the AOF reaches the disk. ``WriteWait`` asks the master, on the connection that
wrote, to wait until ``replicas`` replicas hold the write (``WAIT``), and with ``aof``
until its own AOF has fsynced it (``WAITAOF 1 0``). Fewer in time and the write is not
acknowledged: ``StoreUnavailableError``, which ``DualSaver`` answers by writing
PostgreSQL directly, as when Redis is down.

The replicas' own AOFs are not waited for (``WAITAOF 1 N``): a replica fsyncs at its
``appendfsync`` pace, so with the usual ``everysec`` such a put took a second
(measured: 1.0 s median), against well under a millisecond for the master's own.

On a single server the wait is opt-in. On Redis Cluster the chain's queued writes wait
for every replica of their master unless ``replicas`` says otherwise (``hot.cluster_wait``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from redis import exceptions as rex
from redis.asyncio.cluster import RedisCluster

from langgraph_dualsaver.errors import ConfigurationError, StoreUnavailableError
from langgraph_dualsaver.hot.connection import Client, RedisConnection
from langgraph_dualsaver.hot.scripts import Script

__all__ = [
    "WriteWait",
    "check_acks",
    "check_server",
    "evicts_unexpiring_keys",
    "wait_commands",
    "write_and_wait",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriteWait:
    """What a write to acknowledge waits for.

    replicas: ``None`` (the default): on Redis Cluster, every replica of the write's
        master for the chain's queued writes; on a single server, none. An int: exactly
        that many replicas, on either (``0``: none, which also turns the cluster's
        automatic wait off).
    aof: also wait until the master's AOF has fsynced the write (``WAITAOF 1 0``; the
        master needs ``appendonly yes``). The replicas waited for hold it in memory.
    """

    replicas: int | None = None
    aof: bool = False

    def __post_init__(self) -> None:
        replicas = self.replicas
        if replicas is not None and (
            isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0
        ):
            raise ConfigurationError(
                f"replicas must be an int of 0 or more (or None), got {replicas!r}"
            )
        if not isinstance(self.aof, bool):
            raise ConfigurationError(f"aof must be True or False, got {self.aof!r}")

    def updated(self, replicas: int | None = None, aof: bool | None = None) -> WriteWait:
        """This wait with the settings given (``None``: kept), validated."""
        return WriteWait(
            self.replicas if replicas is None else replicas, self.aof if aof is None else aof
        )

    @property
    def waits(self) -> bool:
        """Whether it asks for any replica or the AOF at all."""
        return bool(self.replicas) or self.aof

    @property
    def explicit(self) -> bool:
        """Whether the caller asked for something (else the cluster default applies)."""
        return self.replicas is not None or self.aof

    def on_single_server(self) -> int:
        """Replicas to wait for on a single server."""
        return self.replicas or 0

    def describe(self) -> str:
        parts = [] if not self.replicas else [f"replicas={self.replicas}"]
        return ", ".join([*parts, *(["aof=True"] if self.aof else [])]) or "no wait"


def wait_commands(replicas: int, aof: bool, timeout_ms: int) -> list[tuple[Any, ...]]:
    """The commands that wait for ``replicas`` replicas (``WAIT``) and for the master's
    own AOF (``WAITAOF 1 0``), each at most ``timeout_ms``; none if nothing is asked."""
    commands: list[tuple[Any, ...]] = []
    if replicas:
        commands.append(("WAIT", replicas, timeout_ms))
    if aof:
        commands.append(("WAITAOF", 1, 0, timeout_ms))
    return commands


def check_acks(
    replies: Sequence[Any], replicas: int, aof: bool, where: str, timeout_ms: int
) -> int:
    """Raise ``StoreUnavailableError`` unless ``replies`` (to ``wait_commands``) say the
    write is where it was asked to be; return how many replicas had it."""
    for reply in replies:
        if isinstance(reply, BaseException):
            raise StoreUnavailableError(
                f"the write reached the master at {where}, which refused to wait for it "
                f"({reply}); it is not acknowledged"
            )
    acks = replies[0] if replicas else 0
    fsynced = replies[-1][0] if aof and isinstance(replies[-1], list) else (None if aof else 1)
    if not (_count(acks) and acks >= replicas and _count(fsynced) and fsynced >= 1):
        missing = f"{acks!r} of the {replicas} replica(s) asked for" if replicas else ""
        if aof and fsynced != 1:
            missing += (" and " if missing else "") + "no fsync of its append-only file"
        raise StoreUnavailableError(
            f"the write reached the master at {where}, but {missing or 'an odd reply'} "
            f"within {timeout_ms} ms ({list(replies)!r:.200}): a crash or a failover could "
            "lose it, so it is not acknowledged"
        )
    return acks


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


async def write_and_wait(
    conn: RedisConnection,
    script: Script,
    keys: Sequence[str],
    args: Sequence[Any],
    wait: WriteWait,
    timeout_ms: int,
) -> Any:
    """On a single server: run ``script``, then on the same connection (one pipeline,
    one round trip) wait as ``wait`` says; return the script's reply or raise
    ``StoreUnavailableError`` if the wait fell short."""
    replicas = wait.on_single_server()
    commands = wait_commands(replicas, wait.aof, timeout_ms)
    if not commands:
        return await conn.eval(script, keys, args)
    client: Client = await conn.client()
    with conn.errors():
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            for command in commands:
                pipe.execute_command(*command)
            stored, *acks = await pipe.execute(raise_on_error=False)
            if isinstance(stored, rex.NoScriptError) and attempt == 1:
                await conn.load_scripts(client)
                continue
            if isinstance(stored, BaseException):
                raise stored
            check_acks(acks, replicas, wait.aof, conn.where, timeout_ms)
            return stored
    raise AssertionError("unreachable")


def evicts_unexpiring_keys(maxmemory_policy: str) -> bool:
    """Whether the policy evicts keys that have no expiry (``allkeys-*``): outbox entries
    and pending threads, whose records PostgreSQL does not have yet."""
    return maxmemory_policy.startswith("allkeys-")


async def check_server(conn: RedisConnection, wait: WriteWait) -> None:
    """At setup: ``aof`` needs ``appendonly yes`` and ``WAITAOF`` (Redis or Valkey 7.2)
    on every master (``ConfigurationError`` otherwise, before any write). Fewer
    connected replicas than ``replicas`` is only logged: they may still be starting;
    until they are there, each put waits the timeout and is not acknowledged from Redis."""
    if not wait.explicit:
        return
    for node, info in await _masters_info(conn):
        version = str(info.get("redis_version", "0"))
        if wait.aof and tuple(int(p) for p in version.split(".")[:2]) < (7, 2):
            raise ConfigurationError(
                f"aof=True waits with WAITAOF, which redis at {node} (version {version}) "
                "does not have: it needs Redis or Valkey >= 7.2; or drop aof=True"
            )
        if wait.aof and int(info.get("aof_enabled", 0)) != 1:
            raise ConfigurationError(
                f"aof=True waits for the append-only file, but redis at {node} has "
                "appendonly no: set appendonly yes on every master, or drop aof=True"
            )
        linked = int(info.get("connected_slaves", 0))
        if wait.replicas and linked < wait.replicas:
            log.warning(
                "replicas=%d, but redis at %s has %d connected replica(s): until more "
                "connect, each put waits the timeout and is not acknowledged from Redis",
                wait.replicas,
                node,
                linked,
            )


async def _masters_info(conn: RedisConnection) -> list[tuple[str, dict[str, Any]]]:
    """``INFO`` (server, persistence, replication, ...) of each master."""
    client = await conn.client()
    with conn.errors():
        if not isinstance(client, RedisCluster):
            return [(conn.where, await client.info())]
        await client.initialize()
        return [(n.name, await client.info(target_nodes=n)) for n in client.get_primaries()]
