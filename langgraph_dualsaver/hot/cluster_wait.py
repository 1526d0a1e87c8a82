"""Writes a Redis Cluster failover cannot take back.

Replication is asynchronous: a master can answer a write and die before its replica has
it, and the replica promoted in its place then serves on without the write, or its
outbox entry. So the hot tier's queued writes run here: the script on the master that
serves the thread's slot and, on the same connection, ``WAIT`` for every replica of that
master (or as many as ``replicas=`` says, and the AOF with ``aof=``: ``hot.write_wait``).
The write counts only once they all have it. There is one attempt and no
redirect is followed: a connection error, a redirect, a cluster in transition or a
replica short of it raises (and the client is told to read the cluster's slots again),
so the caller writes elsewhere rather than acknowledge a write a failover could lose.

Which replicas: every one the master lists in ``CLUSTER NODES`` that is not failed,
linked to it at the moment or not (a replica cut off from its master can still be
promoted). Not ``CLUSTER SLOTS``, which leaves out a replica that has not replicated
anything yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rex
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster

from langgraph_dualsaver.errors import StoreUnavailableError
from langgraph_dualsaver.hot.write_wait import check_acks, wait_commands

__all__ = ["ReplicaCounts", "write_and_wait"]

_LOOK_AGAIN = (
    rex.ConnectionError,
    rex.TimeoutError,
    OSError,
    rex.AskError,  # and MovedError
    rex.ClusterError,  # ClusterDownError, MasterDownError
    rex.TryAgainError,
    rex.ReadOnlyError,
    rex.SlotNotCoveredError,
)
"""Errors that mean the client's map of the cluster may be out of date."""


class ReplicaCounts:
    """How many replicas each master has, asked of the master once per map of the
    cluster the client holds (redis-py builds a new one whenever it reads the slots)."""

    def __init__(self) -> None:
        self._map: object = None
        self._counts: dict[str, int] = {}

    async def of(self, client: RedisCluster, master: ClusterNode) -> int:
        if self._map is not client.nodes_manager.slots_cache:
            self._map, self._counts = client.nodes_manager.slots_cache, {}
        if master.name not in self._counts:
            nodes = await master.execute_command("CLUSTER", "NODES")
            self._counts[master.name] = replicas_of_myself(_text(nodes))
        return self._counts[master.name]

    def forget(self) -> None:
        self._map = None


def replicas_of_myself(cluster_nodes: str) -> int:
    """The replicas ``CLUSTER NODES`` lists for the node that answered, failed ones
    left out."""
    lines = [line.split() for line in cluster_nodes.splitlines() if line.strip()]
    me = next(fields[0] for fields in lines if "myself" in fields[2].split(","))
    return sum(
        1
        for fields in lines
        if fields[3] == me and not {"fail", "handshake"} & set(fields[2].split(","))
    )


async def write_and_wait(
    client: RedisCluster,
    key: str,
    command: Sequence[Any],
    timeout_ms: int,
    counts: ReplicaCounts,
    *,
    replicas: int | None = None,
    aof: bool = False,
) -> Any:
    """Run ``command`` on the master serving ``key``, then wait up to ``timeout_ms`` on
    the same connection for ``replicas`` of that master's replicas (``None``: all of
    them; ``WAIT``), and with ``aof`` for its own AOF too (``WAITAOF``); return the
    command's reply.

    Raises the command's own error (``NoScriptError``: load the scripts and call
    again), the connection's, or ``StoreUnavailableError`` when the wait fell short
    (the replicas are counted again for the next write), or, before writing anything,
    when the master has fewer replicas than ``replicas``."""
    await client.initialize()
    try:
        master = client.get_node_from_key(key)
        assert master is not None  # None only when a replica is asked for
        known = await counts.of(client, master)
        wanted = known if replicas is None else replicas
        if wanted > known:
            counts.forget()  # one may have joined since: count them again next time
            raise StoreUnavailableError(
                f"replicas={wanted}, but the master at {master.name} has {known} replica(s): "
                "the write was not made"
            )
        waits = wait_commands(wanted, aof, timeout_ms)
        commands = [PipelineCommand(0, *command)]
        commands += [PipelineCommand(n, *wait) for n, wait in enumerate(waits, 1)]
        await master.execute_pipeline(commands)
        reply = _result(commands[0])
        acks = [c.result for c in commands[1:]]
        for ack in acks:
            if isinstance(ack, _LOOK_AGAIN):
                raise ack
    except StoreUnavailableError:
        raise
    except _LOOK_AGAIN:
        await _look_again(client, counts)
        raise
    if waits:
        try:
            acknowledged = check_acks(acks, wanted, aof, master.name, timeout_ms)
        except StoreUnavailableError:
            counts.forget()  # one may have failed: count them again
            raise
        if acknowledged > known:  # a replica was added: count them again
            counts.forget()
    return reply


async def _look_again(client: RedisCluster, counts: ReplicaCounts) -> None:
    """Read the cluster's slots again, as redis-py does after such errors; if no node
    answers, the next command finds out."""
    counts.forget()
    with contextlib.suppress(rex.RedisError, OSError):
        await client.nodes_manager.initialize()


def _result(command: PipelineCommand) -> Any:
    if isinstance(command.result, BaseException):
        raise command.result
    return command.result


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
