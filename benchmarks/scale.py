"""The scale benchmark: 1, 2 and 4 application processes against one Redis Cluster (three
masters) and one PostgreSQL, drained by 1 or 2 flush worker processes.

    python benchmarks/scale.py            # full size: benchmarks/results/scale.{json,md,png}
    python benchmarks/scale.py --quick    # a few seconds per configuration

Each application process (``benchmarks/scale_app.py``) runs the case_8842 graph through
DualSaver write_behind with its in-process flusher off; the workers are ``dualsaver flush
--follow`` processes. Per configuration: steps/s, the outbox length over time (sampled
every 0.25 s through the load and the drain after it), the CPU each process used, and
what the stores hold per checkpoint (Redis ``MEMORY USAGE``, PostgreSQL
``pg_total_relation_size`` and WAL). ``docs/scaling.md`` derives a capacity plan from the
JSON (``benchmarks/scale_plan.py`` does the arithmetic). Every process started here is
stopped by its PID, however the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from redis.cluster import RedisCluster  # noqa: E402

from benchmarks import scale_probe as probe  # noqa: E402
from benchmarks.env import create_database, describe_machine, drop_database  # noqa: E402
from benchmarks.scale_plan import derive_plan  # noqa: E402
from benchmarks.scale_report import render_markdown, render_plot  # noqa: E402
from langgraph_dualsaver.chain.saver import DualSaver  # noqa: E402
from langgraph_dualsaver.embedded import EmbeddedPostgres  # noqa: E402
from langgraph_dualsaver.hot import keys as K  # noqa: E402
from tests.cluster import valkey_cluster  # noqa: E402
from tests.servers import remove_tree, throwaway_dir  # noqa: E402

MASTERS = 3
SAMPLE_EVERY_S = 0.2
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Size:
    apps: tuple[int, ...]
    workers: tuple[int, ...]
    seconds: float
    """How long each application process runs its graphs."""
    concurrency: int
    """Invokes in flight in each application process."""
    drain_timeout_s: float
    drain_apps: int = 2
    """Application processes that fill the outbox for the drain measurement."""
    idle_sample_s: float = 1.0
    """How long the servers' idle CPU is measured before the first configuration."""


SIZES = {
    "full": Size(apps=(1, 2, 4), workers=(1, 2), seconds=20.0, concurrency=16, drain_timeout_s=600),
    "quick": Size(apps=(1, 2, 4), workers=(1, 2), seconds=3.0, concurrency=8, drain_timeout_s=120),
    "tiny": Size(
        apps=(1,),
        workers=(1,),
        seconds=0.5,
        concurrency=2,
        drain_timeout_s=60,
        drain_apps=1,
        idle_sample_s=0.2,
    ),
}


@dataclass
class Stores:
    redis_url: str
    ports: list[int]
    pids: dict[str, int]
    admin_url: str
    pgdata: Path
    idle_cpu_per_s: dict[str, float] = field(default_factory=dict)
    """Each server's CPU seconds per second with nothing to do (cluster bus, cron,
    fsync): measured once, subtracted from what a configuration used."""


# -- processes ------------------------------------------------------------------------


class Processes:
    """Every child started for a configuration; ``stop_all`` ends each by its PID
    (SIGTERM, then SIGKILL after a grace period)."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def start(self, command: list[str], stdin: bool = False) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> tuple[str, str]:
        """SIGTERM ``proc`` by PID and collect its output; SIGKILL if it overstays. A
        held (SIGSTOPped) process is continued, so it can act on the SIGTERM."""
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            os.kill(proc.pid, signal.SIGCONT)
        try:
            return proc.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            return proc.communicate()

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                self.stop(proc)


def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    """The next stdout line of ``proc``, failing if it exits or ``deadline`` passes."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.5):
                line = proc.stdout.readline()
                if line:
                    return line.strip()
            if proc.poll() is not None:
                break
    stderr = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
    raise RuntimeError(f"process {proc.pid} gave no line (exit {proc.poll()}): {stderr[-2000:]}")


def _app_command(stores: Stores, db_url: str, prefix: str, size: Size, index: int) -> list[str]:
    return [
        sys.executable, "-m", "benchmarks.scale_app",
        "--redis-url", stores.redis_url, "--postgres-url", db_url, "--prefix", prefix,
        "--seconds", str(size.seconds), "--concurrency", str(size.concurrency),
        "--index", str(index),
    ]  # fmt: skip


def _worker_command(stores: Stores, db_url: str, prefix: str) -> list[str]:
    return [
        sys.executable, "-m", "langgraph_dualsaver",
        "--redis-url", stores.redis_url, "--postgres-url", db_url, "--prefix", prefix,
        "flush", "--follow",
    ]  # fmt: skip


def _flushed(output: str) -> int:
    """The count from the worker's last line, ``stopped; flushed N entries``."""
    match = re.search(r"stopped; flushed (\d+) entries", output)
    if match is None:
        raise RuntimeError(f"the flush worker did not report its count: {output[-500:]!r}")
    return int(match.group(1))


def _servers_cpu(stores: Stores) -> dict[str, float]:
    cpu = {name: probe.cpu_seconds(pid) for name, pid in stores.pids.items() if name != "postgres"}
    cpu["postgres"] = probe.cpu_seconds(stores.pids["postgres"], tree=True)
    return cpu


# -- one configuration ------------------------------------------------------------------


async def _setup(stores: Stores, db_url: str, prefix: str) -> None:
    async with DualSaver.from_conn_string(
        stores.redis_url, db_url, prefix=prefix, background_flush=False
    ) as saver:
        await saver.asetup()


def run_config(
    stores: Stores, size: Size, apps: int, workers: int, hold_workers: bool = False
) -> dict[str, Any]:
    """One configuration: ``apps`` application processes, ``workers`` flush workers.

    With ``hold_workers`` the workers are paused (SIGSTOP) while the applications run
    and continued (SIGCONT) when they stop: the outbox fills, and the time the workers
    take to empty it is their drain rate, without their start-up in it.
    """
    label = f"{apps}a{workers}w" + ("h" if hold_workers else "")
    db_url = asyncio.run(create_database(stores.admin_url, label))
    prefix = f"scale{label}-{uuid.uuid4().hex[:6]}"
    shards = K.DEFAULT_SHARDS
    processes = Processes()
    cluster = RedisCluster.from_url(stores.redis_url.replace("redis+cluster://", "redis://"))
    try:
        asyncio.run(_setup(stores, db_url, prefix))
        wal_start = asyncio.run(_pg(db_url, probe.pg_wal_lsn))
        flushers = [
            processes.start(_worker_command(stores, db_url, prefix)) for _ in range(workers)
        ]
        app_procs = [
            processes.start(_app_command(stores, db_url, prefix, size, i), stdin=True)
            for i in range(apps)
        ]
        deadline = time.monotonic() + READY_TIMEOUT_S
        for proc in flushers:
            line = _read_line(proc, deadline)
            if not line.startswith("flushing the outbox"):
                raise RuntimeError(f"worker {proc.pid} said {line!r}")
            if hold_workers:
                os.kill(proc.pid, signal.SIGSTOP)
        for proc in app_procs:
            line = _read_line(proc, deadline)
            if line != "ready":
                raise RuntimeError(f"app {proc.pid} said {line!r} instead of 'ready'")
        cpu_before, cpu_since = _servers_cpu(stores), time.monotonic()
        workers_cpu_before = [probe.cpu_seconds(p.pid) for p in flushers]
        _, added_before = probe.outbox_counts(cluster, prefix, shards)
        started = time.perf_counter()
        for proc in app_procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

        def release() -> None:
            for proc in flushers if hold_workers else ():
                os.kill(proc.pid, signal.SIGCONT)

        series, load_end, at_load_end = _sample(
            cluster, prefix, shards, app_procs, started, size, release
        )
        cpu_after, cpu_seconds = _servers_cpu(stores), time.monotonic() - cpu_since
        servers_cpu = {
            name: round(max(0.0, used - cpu_before[name] - idle * cpu_seconds), 3)
            for name, used in cpu_after.items()
            for idle in [stores.idle_cpu_per_s.get(name, 0.0)]
        }
        workers_cpu = [
            round(probe.cpu_seconds(p.pid) - before, 3)
            for p, before in zip(flushers, workers_cpu_before, strict=True)
        ]
        app_results = []
        for proc in app_procs:
            out, err = proc.communicate(timeout=STOP_TIMEOUT_S)
            if proc.returncode != 0:
                raise RuntimeError(f"app {proc.pid} exited {proc.returncode}: {err[-2000:]}")
            app_results.append(json.loads(out.strip().splitlines()[-1]))
        worker_results = []
        for proc in flushers:
            out, err = processes.stop(proc)
            if proc.returncode != 0:
                raise RuntimeError(f"worker {proc.pid} exited {proc.returncode}: {err[-2000:]}")
            worker_results.append({"flushed": _flushed(out)})
        storage = asyncio.run(_storage(stores, db_url, prefix, wal_start))
    finally:
        processes.stop_all()
        cluster.close()
    asyncio.run(drop_database(stores.admin_url, db_url))
    record = _summary(
        apps, workers, series, load_end, at_load_end, added_before, app_results,
        worker_results, workers_cpu, servers_cpu, storage,
    )  # fmt: skip
    return {"kind": "drain" if hold_workers else "concurrent", **record}


def _sample(
    cluster: RedisCluster,
    prefix: str,
    shards: int,
    app_procs: list[subprocess.Popen[str]],
    started: float,
    size: Size,
    on_load_end: Callable[[], None],
) -> tuple[list[list[float]], float, dict[str, Any]]:
    """``[seconds, outbox length, entries added]`` every SAMPLE_EVERY_S while the apps
    run and then until the outbox is empty; also when the load ended and the outbox's
    memory at that moment. ``on_load_end`` runs once the last app has exited."""
    series: list[list[float]] = []
    load_end: float | None = None
    at_load_end: dict[str, Any] = {}
    drain_deadline = None
    while True:
        now = time.perf_counter() - started
        queued, added = probe.outbox_counts(cluster, prefix, shards)
        series.append([round(now, 3), queued, added])
        if load_end is None and all(p.poll() is not None for p in app_procs):
            load_end = now
            stream_bytes, stream_entries = probe.stream_memory(cluster, prefix, shards)
            at_load_end = {"stream_bytes": stream_bytes, "stream_entries": stream_entries}
            on_load_end()
            drain_deadline = time.monotonic() + size.drain_timeout_s
        if load_end is not None and queued == 0:
            return series, load_end, at_load_end
        if drain_deadline is not None and time.monotonic() > drain_deadline:
            raise RuntimeError(f"the outbox still held {queued} entries after the drain timeout")
        time.sleep(SAMPLE_EVERY_S)


async def _pg(url: str, query: Any, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await query(conn, *args)
    finally:
        await conn.close()


async def _storage(stores: Stores, db_url: str, prefix: str, wal_start: str) -> dict[str, Any]:
    conn = await asyncpg.connect(db_url)
    try:
        wal = await probe.pg_wal_bytes(conn, wal_start)
        tables = await probe.pg_tables(conn)
        payload = await probe.pg_payload_compression(conn)
        files = await probe.pg_relation_files_compression(conn, stores.pgdata)
    finally:
        await conn.close()
    return {
        "postgres": {"wal_bytes": wal, "tables": tables},
        "compression": {"payload": payload, "relation_files": files},
        "redis": probe.redis_memory(stores.ports, prefix),
    }


def _rate(amount: float, seconds: float) -> float | None:
    return round(amount / seconds, 1) if seconds > 0 else None


def _summary(
    apps: int,
    workers: int,
    series: list[list[float]],
    load_end: float,
    at_load_end: dict[str, Any],
    added_before: int,
    app_results: list[dict[str, Any]],
    worker_results: list[dict[str, Any]],
    workers_cpu: list[float],
    servers_cpu: dict[str, float],
    storage: dict[str, Any],
) -> dict[str, Any]:
    """One configuration's record: rates, lag, CPU, and the stores' bytes per checkpoint."""
    load_rows = [row for row in series if row[0] <= load_end]
    end_row = load_rows[-1] if load_rows else series[0]
    drained_s = series[-1][0] - end_row[0]
    entries = series[-1][2] - added_before
    steps = sum(r["steps"] for r in app_results)
    load_s = max(r["seconds"] for r in app_results)
    queued_at_end = end_row[1]
    checkpoints = storage["postgres"]["tables"]["dualsaver_checkpoints"]["rows"]
    flushed = sum(r["flushed"] for r in worker_results)
    redis_cpu = sum(v for k, v in servers_cpu.items() if k.startswith("valkey"))
    redis_thread_bytes = sum(
        v for k, v in storage["redis"]["bytes_by_kind"].items() if k not in ("outbox", "dead")
    )
    pg_bytes = sum(t["bytes"] for t in storage["postgres"]["tables"].values())
    return {
        "apps": apps,
        "workers": workers,
        "load_seconds": load_s,
        "steps": steps,
        "steps_per_s": _rate(steps, load_s),
        "steps_per_s_per_app": [r["steps_per_s"] for r in app_results],
        "app_cpu_ms_per_step": round(sum(r["cpu_s"] for r in app_results) / steps * 1000, 4),
        "outbox_entries_added": entries,
        "entries_per_step": round(entries / steps, 4) if steps else None,
        "entries_per_s": round(steps / load_s * entries / steps, 1) if steps else None,
        "outbox_at_load_end": queued_at_end,
        "outbox_max": max(row[1] for row in series),
        "outbox_max_seconds_of_writes": (
            round(max(row[1] for row in series) / (entries / load_s), 3) if entries else None
        ),
        "drain_seconds_after_load": round(drained_s, 3),
        "drain_per_s_after_load": _rate(queued_at_end, drained_s) if queued_at_end else None,
        "drain_per_s_per_worker_after_load": (
            _rate(queued_at_end / workers, drained_s) if queued_at_end else None
        ),
        "outbox_stream_bytes_per_entry": (
            round(at_load_end["stream_bytes"] / at_load_end["stream_entries"], 1)
            if at_load_end.get("stream_entries")
            else None
        ),
        "workers_flushed": flushed,
        "workers_cpu_s": workers_cpu,
        "worker_cpu_ms_per_entry": round(sum(workers_cpu) / flushed * 1000, 4) if flushed else None,
        "servers_cpu_s_net_of_idle": servers_cpu,
        "redis_cpu_ms_per_checkpoint": round(redis_cpu / checkpoints * 1000, 4),
        "postgres_cpu_ms_per_checkpoint": round(servers_cpu["postgres"] / checkpoints * 1000, 4),
        "checkpoints": checkpoints,
        "redis_bytes_per_checkpoint": round(redis_thread_bytes / checkpoints, 1),
        "postgres_bytes_per_checkpoint": round(pg_bytes / checkpoints, 1),
        "postgres_wal_bytes_per_checkpoint": round(
            storage["postgres"]["wal_bytes"] / checkpoints, 1
        ),
        "storage": storage,
        "apps_detail": app_results,
        "workers_detail": worker_results,
        "series": series,
    }


# -- the run ----------------------------------------------------------------------------


@contextmanager
def stores() -> Iterator[Stores]:
    """A three-master cluster (append-only files, as in production) and one durable
    PostgreSQL, in throwaway directories; every server stopped by PID on the way out."""
    with ExitStack() as stack:
        nodes = stack.enter_context(valkey_cluster(MASTERS, appendonly=True))
        workdir = throwaway_dir("dualsaver-scale-")
        stack.callback(remove_tree, workdir)
        postgres = EmbeddedPostgres(workdir / "postgres", durable=True)
        stack.callback(postgres.stop)
        postgres.start()
        pids = {f"valkey{i}": node.pid for i, node in enumerate(nodes) if node.pid}
        assert postgres.pid is not None
        pids["postgres"] = postgres.pid
        yield Stores(
            redis_url=f"redis+cluster://127.0.0.1:{nodes[0].port}/0",
            ports=[node.port for node in nodes],
            pids=pids,
            admin_url=postgres.url,
            pgdata=postgres.pgdata,
        )


def measure_idle(found: Stores, seconds: float) -> None:
    """The servers' CPU rate with no client, over ``seconds``."""
    before, started = _servers_cpu(found), time.monotonic()
    time.sleep(seconds)
    after, elapsed = _servers_cpu(found), time.monotonic() - started
    found.idle_cpu_per_s = {
        name: round((after[name] - before[name]) / elapsed, 4) for name in after
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(size_name: str, out: Path) -> dict[str, Any]:
    size = SIZES[size_name]
    machine = describe_machine()
    configs = []
    with stores() as found:
        measure_idle(found, size.idle_sample_s)
        for apps in size.apps:
            for workers in size.workers:
                print(f"scale: {apps} app(s), {workers} worker(s)", flush=True)
                configs.append(run_config(found, size, apps, workers))
        for workers in size.workers:
            print(f"scale: drain, {size.drain_apps} app(s), {workers} held worker(s)", flush=True)
            configs.append(run_config(found, size, size.drain_apps, workers, hold_workers=True))
        started_pids = sorted(found.pids.values())
        idle = found.idle_cpu_per_s
    doc: dict[str, Any] = {
        "size": size_name,
        "command": "python benchmarks/scale.py"
        + {"full": "", "quick": " --quick"}.get(size_name, f" --size {size_name}"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": asdict(size),
        "machine": {**machine, "load_average_at_end": _load()},
        "cluster": {"masters": MASTERS, "appendonly": True, "outbox_shards": K.DEFAULT_SHARDS},
        "started_server_pids": started_pids,
        "servers_idle_cpu_per_s": idle,
        "configs": configs,
    }
    out.mkdir(parents=True, exist_ok=True)
    return write_results(doc, out)


def write_results(doc: dict[str, Any], out: Path) -> dict[str, Any]:
    """The plan derived from the measurements, then scale.json, scale.png and scale.md."""
    doc["plan"] = derive_plan(doc)
    (out / "scale.json").write_text(json.dumps(doc, indent=1) + "\n")
    render_plot(doc, out / "scale.png")
    (out / "scale.md").write_text(render_markdown(doc, "scale.png"))
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_const", const="quick", dest="size")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument(
        "--out", type=Path, help="default benchmarks/results (full), else .../results/<size>"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: derive the plan again from OUT/scale.json, rewrite the report",
    )
    args = parser.parse_args()
    size = args.size or "full"
    results = ROOT / "benchmarks" / "results"
    out = args.out or (results if size == "full" else results / size)
    if args.report_only:
        write_results(json.loads((out / "scale.json").read_text()), out)
    else:
        run(size, out)


if __name__ == "__main__":
    main()
