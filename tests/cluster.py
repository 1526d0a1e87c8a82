"""A real Redis Cluster of three masters on loopback, from the embedded valkey-server.

Each node gets its own throwaway directory, port and cluster-bus port; the slots are
split in three with CLUSTER ADDSLOTSRANGE, the nodes are joined with CLUSTER MEET, and
the fixture waits (polling, with a deadline) until every node reports
``cluster_state:ok``. All three processes are stopped by PID even when a test fails.
A node can be snapshotted (SAVE) and later killed and restarted from that snapshot, and
a master can be given a replica (its own process, stopped by PID the same way) that a
test promotes. ``replicated_cluster`` builds masters with one replica each the way an
operator does, with ``valkey-cli --cluster create`` (shipped beside valkey-server), so
that a killed master's replica is promoted by the cluster itself.
"""

from __future__ import annotations

import functools
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from langgraph_dualsaver.embedded import EmbeddedValkey, free_port
from tests.helpers import wait_until
from tests.servers import remove_tree, throwaway_dir

SLOTS = 16384
READY_TIMEOUT_S = 30.0
_wait = functools.partial(wait_until, timeout=READY_TIMEOUT_S)
"""Poll a check until it holds, for at most ``READY_TIMEOUT_S``."""


def _node(
    stack: ExitStack, node_timeout_ms: int = 5000, appendonly: bool = False
) -> tuple[EmbeddedValkey, int]:
    """A started cluster-enabled node and its cluster-bus port (port + 10000 may not
    exist, so the bus gets a free port of its own)."""
    data_dir = throwaway_dir("dualsaver-cluster-")
    bus_port = free_port()
    server = EmbeddedValkey(
        data_dir,
        appendonly=appendonly,
        extra_args=[
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(data_dir / "nodes.conf"),
            "--cluster-port", str(bus_port),
            "--cluster-node-timeout", str(node_timeout_ms),
        ],
    )  # fmt: skip

    def stop() -> None:
        server.stop()
        remove_tree(data_dir)

    stack.callback(stop)
    return server.start(), bus_port


def _cluster_ok(clients: list[redis.Redis], masters: int) -> bool:
    for client in clients:
        info = client.cluster("info")
        if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) < masters:
            return False
    return True


@contextmanager
def valkey_cluster(masters: int = 3, appendonly: bool = False) -> Iterator[list[EmbeddedValkey]]:
    """``masters`` valkey-server processes forming one cluster; yields the nodes.
    ``appendonly``: each node keeps an append-only file (fsync every second), as in
    production (the scale benchmark runs so)."""
    with ExitStack() as stack:
        started = [_node(stack, appendonly=appendonly) for _ in range(masters)]
        nodes = [node for node, _ in started]
        clients = [redis.Redis(port=n.port, decode_responses=True) for n in nodes]
        for client in clients:
            stack.callback(client.close)
        bounds = [SLOTS * i // masters for i in range(masters + 1)]
        for client, low, high in zip(clients, bounds, bounds[1:], strict=False):
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high - 1)
        for node, bus_port in started[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)
        _wait_until_ok(clients, masters)
        yield nodes


def _wait_until_ok(clients: list[redis.Redis], masters: int) -> None:
    _wait(lambda: _cluster_ok(clients, masters), f"the {masters}-master cluster to be ok")


def snapshot(node: EmbeddedValkey) -> None:
    """SAVE the node's data to its RDB file, the one it loads when restarted."""
    with redis.Redis(port=node.port) as client:
        client.save()


def restart_from_snapshot(node: EmbeddedValkey, nodes: list[EmbeddedValkey]) -> None:
    """SIGKILL ``node`` and start it again on its port, directory and nodes.conf: it
    comes back with the data of its last ``snapshot``, as the same cluster node with a
    new run_id. Returns once every node reports ``cluster_state:ok`` again (a restarted
    master waits a moment before it serves)."""
    node.kill()
    node.start()
    clients = [redis.Redis(port=n.port, decode_responses=True) for n in nodes]
    try:
        _wait_until_ok(clients, len(nodes))
    finally:
        for client in clients:
            client.close()


@contextmanager
def replica_of(master: EmbeddedValkey) -> Iterator[EmbeddedValkey]:
    """A new node replicating ``master``, caught up with it; stopped by PID on exit."""
    with ExitStack() as stack:
        replica, bus_port = _node(stack)
        m = stack.enter_context(redis.Redis(port=master.port, decode_responses=True))
        r = stack.enter_context(redis.Redis(port=replica.port, decode_responses=True))
        master_id = m.execute_command("CLUSTER", "MYID")
        m.execute_command("CLUSTER", "MEET", "127.0.0.1", replica.port, bus_port)
        _wait(lambda: master_id in r.execute_command("CLUSTER", "NODES"), "the replica to meet")
        r.execute_command("CLUSTER", "REPLICATE", master_id)
        wait_caught_up(master, replica)
        yield replica


def wait_caught_up(master: EmbeddedValkey, replica: EmbeddedValkey) -> None:
    """Return once ``replica`` has applied everything ``master`` has written."""
    with (
        redis.Redis(port=master.port, decode_responses=True) as m,
        redis.Redis(port=replica.port, decode_responses=True) as r,
    ):

        def caught_up() -> bool:
            info = r.info("replication")
            return info.get("master_link_status") == "up" and info.get(
                "slave_repl_offset"
            ) == m.info("replication").get("master_repl_offset")

        _wait(caught_up, "the replica to catch up")


@contextmanager
def replication_cut(master: EmbeddedValkey, replica: EmbeddedValkey) -> Iterator[None]:
    """Inside, nothing ``master`` writes reaches ``replica``: the replica is paused
    (SIGSTOP) and the master drops its link, so not even socket buffers carry it over.
    The replica resumes (SIGCONT) on the way out, however the block ends."""
    replica.signal(signal.SIGSTOP)
    try:
        with redis.Redis(port=master.port) as m:
            m.client_kill_filter(_type="replica")
        yield
    finally:
        replica.signal(signal.SIGCONT)


def take_over(replica: EmbeddedValkey, live: list[EmbeddedValkey]) -> None:
    """``CLUSTER FAILOVER TAKEOVER``: ``replica`` becomes master of its master's slots
    with whatever data it has, asking no one (its master may be dead). Returns once
    every node in ``live`` maps those slots to it and reports ``cluster_state:ok``."""
    clients = [redis.Redis(port=n.port, decode_responses=True) for n in live]
    try:
        with redis.Redis(port=replica.port, decode_responses=True) as r:
            replica_id = r.execute_command("CLUSTER", "MYID")
            r.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
        _wait(
            lambda: (
                all(_serves_slots(c, replica_id) for c in clients)
                and _cluster_ok(clients, len(live))
            ),
            "every node to see the replica as master",
        )
    finally:
        for client in clients:
            client.close()


def _serves_slots(client: redis.Redis, node_id: str) -> bool:
    """Whether ``client``'s node sees ``node_id`` as a master serving slots."""
    for line in client.execute_command("CLUSTER", "NODES").splitlines():
        fields = line.split()
        if fields and fields[0] == node_id:
            return "master" in fields[2].split(",") and len(fields) > 8
    return False


@dataclass(frozen=True)
class Shard:
    """A master and the replica the cluster promotes when the master dies."""

    master: EmbeddedValkey
    replica: EmbeddedValkey


def _valkey_cli() -> str:
    return str(Path(EmbeddedValkey.executable()).with_name("valkey-cli"))


@contextmanager
def replicated_cluster(masters: int = 3, node_timeout_ms: int = 2000) -> Iterator[list[Shard]]:
    """``masters`` masters with one replica each, created with ``valkey-cli --cluster
    create --cluster-replicas 1``; yields each master with its replica once the cluster
    is ok and every replica has caught up. All ``2 * masters`` processes are stopped by
    PID on exit, however the block ends."""
    with ExitStack() as stack:
        nodes = [_node(stack, node_timeout_ms)[0] for _ in range(2 * masters)]
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [_valkey_cli(), "--cluster", "create", *addresses,
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=READY_TIMEOUT_S,
        )  # fmt: skip
        clients = [
            stack.enter_context(redis.Redis(port=n.port, decode_responses=True)) for n in nodes
        ]
        _wait(lambda: _cluster_ok(clients, 2 * masters), "the replicated cluster to be ok")
        shards: list[Shard] = []

        def paired() -> bool:
            shards[:] = _shards(nodes, clients)
            return len(shards) == masters

        _wait(paired, "every master to have its replica")
        for shard in shards:
            wait_caught_up(shard.master, shard.replica)
        yield shards


def _shards(nodes: list[EmbeddedValkey], clients: list[redis.Redis]) -> list[Shard]:
    """Each master with its replica, as the first node sees them now."""
    by_id = {
        client.execute_command("CLUSTER", "MYID"): node
        for node, client in zip(nodes, clients, strict=True)
    }
    replica_of: dict[str, EmbeddedValkey] = {}
    for line in clients[0].execute_command("CLUSTER", "NODES").splitlines():
        fields = line.split()
        if "slave" in fields[2].split(",") and fields[3] in by_id:
            replica_of[fields[3]] = by_id[fields[0]]
    return [Shard(by_id[master_id], replica) for master_id, replica in replica_of.items()]


def wait_promoted(replica: EmbeddedValkey, live: list[EmbeddedValkey]) -> None:
    """Return once the cluster has promoted ``replica`` by itself (its master died):
    every node in ``live`` maps slots to it and reports ``cluster_state:ok``."""
    clients = [redis.Redis(port=n.port, decode_responses=True) for n in live]
    try:
        with redis.Redis(port=replica.port, decode_responses=True) as r:
            replica_id = r.execute_command("CLUSTER", "MYID")
        _wait(
            lambda: (
                all(_serves_slots(c, replica_id) for c in clients)
                and _cluster_ok(clients, len(live))
            ),
            "the cluster to promote the replica",
        )
    finally:
        for client in clients:
            client.close()
