"""A real Redis Cluster of three masters on loopback, from the embedded valkey-server.

Each node gets its own throwaway directory, port and cluster-bus port; the slots are
split in three with CLUSTER ADDSLOTSRANGE, the nodes are joined with CLUSTER MEET, and
the fixture waits (polling, with a deadline) until every node reports
``cluster_state:ok``. All three processes are stopped by PID even when a test fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import redis

from langgraph_dualsaver.embedded import EmbeddedValkey, free_port, remove_tree, throwaway_dir

SLOTS = 16384
READY_TIMEOUT_S = 30.0


def _node(stack: ExitStack) -> tuple[EmbeddedValkey, int]:
    """A started cluster-enabled node and its cluster-bus port (port + 10000 may not
    exist, so the bus gets a free port of its own)."""
    data_dir = throwaway_dir("dualsaver-cluster-")
    bus_port = free_port()
    server = EmbeddedValkey(
        data_dir,
        extra_args=[
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(data_dir / "nodes.conf"),
            "--cluster-port", str(bus_port),
            "--cluster-node-timeout", "5000",
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
def valkey_cluster(masters: int = 3) -> Iterator[list[EmbeddedValkey]]:
    """``masters`` valkey-server processes forming one cluster; yields the nodes."""
    with ExitStack() as stack:
        started = [_node(stack) for _ in range(masters)]
        nodes = [node for node, _ in started]
        clients = [redis.Redis(port=n.port, decode_responses=True) for n in nodes]
        for client in clients:
            stack.callback(client.close)
        bounds = [SLOTS * i // masters for i in range(masters + 1)]
        for client, low, high in zip(clients, bounds, bounds[1:], strict=False):
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high - 1)
        for node, bus_port in started[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _cluster_ok(clients, masters):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {masters}-node cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        yield nodes
