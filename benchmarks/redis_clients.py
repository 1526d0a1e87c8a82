"""Redis client options for the hot tier's put path, side by side.

    python benchmarks/redis_clients.py                  # starts its own Valkey
    python benchmarks/redis_clients.py --rounds 3 --calls 500 --calls-per-worker 100

A put is one EVALSHA of the STORE script with ~10 keys and 1-3 KB of arguments,
replying with a short list. Here each client runs an EVALSHA of a small script shaped
like it (HSET of a stored checkpoint, XADD of its payload to a shard's outbox, reply
``{entry id}``), with the same ten keys and ~2.3 KB of arguments, at concurrency 1 and
16 (coroutines on one event loop, each its own thread's keys). Per variant and
concurrency: throughput (calls/s), p50/p99 latency, the client's CPU per call
(``time.process_time`` of this whole process, every thread included, over the calls),
the event loop thread's share of it (``time.thread_time``: what a graph step on that
loop waits behind; a client with threads of its own does part of its work elsewhere)
and Valkey's (``used_cpu_sys + used_cpu_user`` from ``INFO cpu``, over the calls),
with Valkey's socket reads per call (``total_reads_processed``): below 1 when a client
pipelines concurrent calls on a connection, the server work such batching saves.

Variants (a client whose package is missing is reported as such and skipped):

1. redis-py asyncio on a ``BlockingConnectionPool`` (max 100): what ``RedisConnection``
   opens today, with its options (timeouts, one retry on a dropped connection).
2. redis-py asyncio on a plain ``ConnectionPool``, same options.
2b. The same behind an ``asyncio.Semaphore(100)``: the bound the blocking pool gives
   (a call past 100 waits instead of failing), kept at the cost of a semaphore.
3. redis-py asyncio, one connection shared by every coroutine:
   ``single_connection_client=True``, which serializes commands on its own
   ``asyncio.Lock`` (redis-py's, so safe; one command on the wire at a time).
4. valkey-glide's asyncio ``GlideClient``: one multiplexed connection, commands
   pipelined by its Rust core; the script through ``invoke_script`` (EVALSHA, loading
   it on NOSCRIPT).
5. coredis ``Redis``: a pool whose connections are released before the reply, so
   concurrent commands share (pipeline on) a connection.

A "harness" row times a no-op call through the same loop: the floor of the
bookkeeping every row includes. The variants take turns, in a rotated order each
round; the figures are medians over rounds, and a ratio against variant 1 is the
median over rounds of the ratio within each round (so load that drifts between rounds
cancels), with the range of the throughput ratio over rounds. The machine may be
shared: only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from redis import exceptions as rex  # noqa: E402
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis  # noqa: E402
from redis.asyncio.retry import Retry  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402

from langgraph_dualsaver.embedded import EmbeddedValkey  # noqa: E402
from langgraph_dualsaver.settings import Timeouts  # noqa: E402
from tests.servers import remove_tree, throwaway_dir  # noqa: E402

SCRIPT = r"""
-- KEYS: meta, cp, idx, blobs, writes, outbox, registry, and three more of the thread's.
-- ARGV: thread_id, ttl_ms, enqueue, cap, now, n_items, 'c', cp_field, stored, n_blobs,
--       payload, tag. Stores the checkpoint, queues its payload; returns {entry id}.
redis.call('HSET', KEYS[2], ARGV[8], ARGV[9])
redis.call('HSET', KEYS[1], 'thread_id', ARGV[1], 'c', '1')
local id = redis.call('XADD', KEYS[6], 'MAXLEN', '~', 1000, '*', 'r', ARGV[11], 'm', ARGV[12])
return {id}
"""
KEY_NAMES = ("meta", "cp", "idx", "blobs", "writes", "outbox", "registry", "a", "b", "c")
STORED_BYTES = 1200
PAYLOAD_BYTES = 1000
FIELDS_PER_THREAD = 20
"""Checkpoint fields a thread cycles through, so its hash stays small however long."""
SHARDS = 4
ENTRY_ID = re.compile(rb"\d+-\d+")

Call = Callable[[list[bytes], list[bytes]], Awaitable[Any]]


# -- workload -------------------------------------------------------------------------


def thread_keys(worker: int) -> list[bytes]:
    """Ten keys the length of the saver's (a prefix, a hash-tagged digest, a suffix);
    the outbox is one of ``SHARDS`` shared streams."""
    digest = f"{worker:064x}"
    keys = [f"bench:{{{digest}}}:{name}".encode() for name in KEY_NAMES]
    keys[5] = f"bench:outbox:{{{worker % SHARDS}}}".encode()
    return keys


def put_args(worker: int) -> list[list[bytes]]:
    """``FIELDS_PER_THREAD`` argument lists for one thread, built before timing."""
    stored = os.urandom(STORED_BYTES // 2).hex().encode()
    payload = os.urandom(PAYLOAD_BYTES // 2).hex().encode()
    thread_id = f"thread-{worker:08d}-0000-4000-8000-000000000000".encode()
    return [
        [thread_id, b"0", b"1", b"0", b"1764668000.125", b"1", b"c",
         f"1ef0c2d4-{i:04d}-6b3e-8001-7f3a9b2c4d5e".encode(), stored, b"0", payload,
         b"checkpoint:v1"]
        for i in range(FIELDS_PER_THREAD)
    ]  # fmt: skip


# -- clients --------------------------------------------------------------------------


@dataclass
class Opened:
    call: Call
    close: Callable[[], Awaitable[None]]


def redis_py_options(timeouts: Timeouts) -> dict[str, Any]:
    """The options ``RedisConnection`` opens its clients with."""
    return {
        "socket_connect_timeout": timeouts.connect_s,
        "socket_timeout": timeouts.command_s,
        "retry": Retry(NoBackoff(), 1, supported_errors=(rex.ConnectionError,)),
        "decode_responses": False,
    }


def redis_py_call(client: Redis, sha: str) -> Call:
    async def call(keys: list[bytes], args: list[bytes]) -> Any:
        return await client.evalsha(sha, len(keys), *keys, *args)

    return call


async def open_blocking_pool(url: str, port: int, sha: str) -> Opened:
    timeouts = Timeouts()
    pool = BlockingConnectionPool.from_url(
        url, max_connections=100, timeout=timeouts.command_s, **redis_py_options(timeouts)
    )
    client = Redis.from_pool(pool)
    return Opened(redis_py_call(client, sha), client.aclose)


async def open_plain_pool(url: str, port: int, sha: str) -> Opened:
    pool = ConnectionPool.from_url(url, max_connections=100, **redis_py_options(Timeouts()))
    client = Redis.from_pool(pool)
    return Opened(redis_py_call(client, sha), client.aclose)


async def open_plain_pool_bounded(url: str, port: int, sha: str) -> Opened:
    opened = await open_plain_pool(url, port, sha)
    bound = asyncio.Semaphore(100)
    unbounded = opened.call

    async def call(keys: list[bytes], args: list[bytes]) -> Any:
        async with bound:
            return await unbounded(keys, args)

    return Opened(call, opened.close)


async def open_single_connection(url: str, port: int, sha: str) -> Opened:
    client = Redis.from_url(url, single_connection_client=True, **redis_py_options(Timeouts()))
    await client.initialize()
    return Opened(redis_py_call(client, sha), client.aclose)


async def open_glide(url: str, port: int, sha: str) -> Opened:
    from glide import GlideClient, GlideClientConfiguration, NodeAddress, Script

    timeouts = Timeouts()
    config = GlideClientConfiguration(
        [NodeAddress("127.0.0.1", port)], request_timeout=int(timeouts.command_s * 1000)
    )
    client = await GlideClient.create(config)
    script = Script(SCRIPT)

    async def call(keys: list[bytes], args: list[bytes]) -> Any:
        return await client.invoke_script(script, keys=keys, args=args)

    return Opened(call, client.close)


async def open_coredis(url: str, port: int, sha: str) -> Opened:
    import coredis

    timeouts = Timeouts()
    client = coredis.Redis(
        "127.0.0.1",
        port,
        connect_timeout=timeouts.connect_s,
        stream_timeout=timeouts.command_s,
        max_connections=100,
        decode_responses=False,
    )
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(client)  # coredis 6: a client runs inside its context

    async def call(keys: list[bytes], args: list[bytes]) -> Any:
        return await client.evalsha(sha, keys=keys, args=args)

    return Opened(call, stack.aclose)


@dataclass(frozen=True)
class Variant:
    name: str
    package: str | None
    open: Callable[[str, int, str], Awaitable[Opened]]


VARIANTS = (
    Variant("1 redis-py BlockingConnectionPool (today)", None, open_blocking_pool),
    Variant("2 redis-py ConnectionPool", None, open_plain_pool),
    Variant("2b redis-py ConnectionPool + Semaphore(100)", None, open_plain_pool_bounded),
    Variant("3 redis-py single connection + lock", None, open_single_connection),
    Variant("4 valkey-glide GlideClient", "valkey-glide", open_glide),
    Variant("5 coredis Redis", "coredis", open_coredis),
)
HARNESS = "harness (no-op call)"


# -- measuring ------------------------------------------------------------------------


@dataclass
class Sample:
    calls_per_s: float
    p50_us: float
    p99_us: float
    client_cpu_us: float
    loop_cpu_us: float
    server_cpu_us: float
    server_reads: float


FIGURES = (
    "calls_per_s", "p50_us", "p99_us", "client_cpu_us", "loop_cpu_us", "server_cpu_us",
    "server_reads",
)  # fmt: skip


@dataclass
class Results:
    samples: dict[tuple[str, int], list[Sample]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, concurrency: int, sample: Sample) -> None:
        self.samples.setdefault((name, concurrency), []).append(sample)

    def median(self, name: str, concurrency: int) -> Sample | None:
        rows = self.samples.get((name, concurrency))
        if not rows:
            return None
        return Sample(*(statistics.median(getattr(row, f) for row in rows) for f in FIGURES))

    def ratios(self, name: str, base: str, concurrency: int, figure: str) -> list[float]:
        """``figure`` of ``name`` over that of ``base``, round by round."""
        rows, refs = self.samples[(name, concurrency)], self.samples[(base, concurrency)]
        pairs = zip(rows, refs, strict=True)
        return [getattr(row, figure) / getattr(ref, figure) for row, ref in pairs]


def server_counters(control: redis.Redis) -> tuple[float, int]:
    """Valkey's CPU seconds so far, and the socket reads it has made."""
    info = control.info("cpu", "stats")
    cpu = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return cpu, int(info["total_reads_processed"])


async def no_op(keys: list[bytes], args: list[bytes]) -> None:
    return None


async def measure(call: Call, concurrency: int, per_worker: int, control: redis.Redis) -> Sample:
    """``concurrency`` coroutines, each ``per_worker`` calls in a row on its own keys."""
    workloads = [(thread_keys(w), put_args(w)) for w in range(concurrency)]
    latencies: list[int] = []

    async def worker(keys: list[bytes], arg_lists: list[list[bytes]]) -> None:
        for i in range(per_worker):
            args = arg_lists[i % FIELDS_PER_THREAD]
            began = time.perf_counter_ns()
            await call(keys, args)
            latencies.append(time.perf_counter_ns() - began)

    server_before, reads_before = server_counters(control)
    loop_before, cpu_before = time.thread_time(), time.process_time()
    wall_before = time.perf_counter()
    await asyncio.gather(*(worker(keys, args) for keys, args in workloads))
    wall, cpu = time.perf_counter() - wall_before, time.process_time() - cpu_before
    loop = time.thread_time() - loop_before
    server_after, reads_after = server_counters(control)
    calls = concurrency * per_worker
    cuts = statistics.quantiles(latencies, n=100)
    return Sample(
        calls_per_s=calls / wall,
        p50_us=statistics.median(latencies) / 1000,
        p99_us=cuts[98] / 1000,
        client_cpu_us=cpu / calls * 1e6,
        loop_cpu_us=loop / calls * 1e6,
        server_cpu_us=(server_after - server_before) / calls * 1e6,
        server_reads=(reads_after - reads_before - 1) / calls,  # less the INFO's own read
    )


def check_reply(name: str, reply: Any) -> None:
    """The script's answer, ``[entry id]``, whatever the client's reply types."""
    first = reply[0] if isinstance(reply, list) and reply else None
    if isinstance(first, str):
        first = first.encode()
    if not (isinstance(first, bytes) and ENTRY_ID.fullmatch(first)):
        raise AssertionError(f"{name}: unexpected reply to the script: {reply!r}")


async def open_all(url: str, port: int, sha: str, results: Results) -> dict[str, Opened]:
    """Each variant's client, warmed up and its reply checked; missing ones skipped."""
    opened: dict[str, Opened] = {}
    for variant in VARIANTS:
        try:
            client = await variant.open(url, port, sha)
        except ImportError as exc:
            results.skipped[variant.name] = f"{variant.package} not importable: {exc}"
            continue
        opened[variant.name] = client
        check_reply(variant.name, await client.call(thread_keys(0), put_args(0)[0]))
    return opened


async def run(
    url: str, port: int, rounds: int, calls: int, per_worker: int, concurrency: int
) -> Results:
    results = Results()
    control = redis.Redis.from_url(url)
    try:
        sha = control.script_load(SCRIPT)
        opened = await open_all(url, port, sha, results)
        try:
            for client in opened.values():  # warm up: connections for every coroutine
                await measure(client.call, concurrency, 20, control)
            names = list(opened)
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for level, n in ((1, calls), (concurrency, per_worker)):
                    results.add(HARNESS, level, await measure(no_op, level, n, control))
                    for name in order:
                        results.add(
                            name, level, await measure(opened[name].call, level, n, control)
                        )
                print(f"round {r + 1}/{rounds} done", file=sys.stderr)
        finally:
            for client in opened.values():
                await client.close()
    finally:
        control.close()
    return results


# -- report ---------------------------------------------------------------------------


def versions(url: str) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("redis", "hiredis", "valkey-glide", "coredis"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    control = redis.Redis.from_url(url)
    try:
        server = control.info("server")
    finally:
        control.close()
    found["valkey"] = str(server.get("valkey_version") or server.get("redis_version"))
    return found


def table(head: Sequence[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def figures_table(results: Results, levels: Sequence[int]) -> list[str]:
    """Each variant's medians over rounds."""
    head = ["variant", "conc", "calls/s", "p50 us", "p99 us", "client CPU us/call",
            "loop thread CPU us/call", "Valkey CPU us/call", "Valkey reads/call"]  # fmt: skip
    rows = []
    for level in levels:
        for name in [*(v.name for v in VARIANTS), HARNESS]:
            row = results.median(name, level)
            if row is not None:
                rows.append([
                    name, str(level), f"{row.calls_per_s:,.0f}", f"{row.p50_us:.0f}",
                    f"{row.p99_us:.0f}", f"{row.client_cpu_us:.1f}", f"{row.loop_cpu_us:.1f}",
                    f"{row.server_cpu_us:.1f}", f"{row.server_reads:.2f}",
                ])  # fmt: skip
    return table(head, rows)


def ratios_table(results: Results, levels: Sequence[int]) -> list[str]:
    """Each variant against variant 1: medians of the ratios within each round."""
    base = VARIANTS[0].name
    head = ["variant", "conc", "calls/s (range)", "p50", "p99", "client CPU",
            "loop thread CPU", "Valkey CPU"]  # fmt: skip
    rows = []
    for level in levels:
        for name in (v.name for v in VARIANTS[1:]):
            if (name, level) not in results.samples:
                continue
            cells = [name, str(level)]
            for figure in FIGURES[:-1]:
                ratios = results.ratios(name, base, level, figure)
                cell = f"{statistics.median(ratios):.2f}x"
                if figure == "calls_per_s":
                    cell += f" ({min(ratios):.2f}-{max(ratios):.2f})"
                cells.append(cell)
            rows.append(cells)
    return table(head, rows)


def report(results: Results, concurrency: int) -> str:
    levels = (1, concurrency)
    lines = ["Medians over rounds:", "", *figures_table(results, levels), ""]
    lines += [f"Against variant 1 ({VARIANTS[0].name}), median of per-round ratios:", ""]
    lines += ratios_table(results, levels)
    for name, why in results.skipped.items():
        lines.append(f"\nSkipped {name}: {why}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=1000, help="calls at concurrency 1")
    parser.add_argument("--calls-per-worker", type=int, default=200, help="at concurrency 16")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    began = time.monotonic()
    server = EmbeddedValkey(throwaway_dir("redis-clients-")).start()
    try:
        found = versions(server.url)
        results = asyncio.run(
            run(server.url, server.port, args.rounds, args.calls, args.calls_per_worker,
                args.concurrency)
        )  # fmt: skip
    finally:
        server.stop()
        remove_tree(server.data_dir)
    load_after = os.getloadavg()
    print(
        f"EVALSHA of a {len(KEY_NAMES)}-key script (HSET + HSET + XADD, reply [id]), "
        f"~{STORED_BYTES + PAYLOAD_BYTES + 150:,} bytes of arguments; {args.rounds} rounds, "
        f"{args.calls} calls at 1, {args.concurrency} x {args.calls_per_worker} at "
        f"{args.concurrency}; medians over rounds."
    )
    print(
        f"Machine: {os.cpu_count()} cores, load average {load_before[0]:.2f} before / "
        f"{load_after[0]:.2f} after; {time.monotonic() - began:.0f} s in all."
    )
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    print()
    print(report(results, args.concurrency))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
