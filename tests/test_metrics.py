"""Metrics and traces: OpenTelemetry's real SDK in the app (in-memory reader and span
exporter), and the Prometheus endpoint of a real ``dualsaver flush --follow`` worker,
scraped over loopback HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypedDict

import asyncpg
import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from langgraph_dualsaver import metrics
from langgraph_dualsaver.chain.flusher import Flusher
from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.cli.app import app
from tests.helpers import run_config
from tests.test_cli import REPO, Store, closed_port, invoke

DEADLINE_S = 30.0


class Count(TypedDict):
    count: int


def counting_graph(saver: DualSaver) -> CompiledStateGraph:
    """START -> one -> two -> END, each adding one."""
    builder = StateGraph(Count)
    builder.add_node("one", lambda state: {"count": state["count"] + 1})
    builder.add_node("two", lambda state: {"count": state["count"] + 1})
    builder.add_edge(START, "one")
    builder.add_edge("one", "two")
    builder.add_edge("two", END)
    return builder.compile(checkpointer=saver)


# -- OpenTelemetry ----------------------------------------------------------------------


@dataclass(frozen=True)
class Otel:
    reader: InMemoryMetricReader
    spans: InMemorySpanExporter
    tracer: Tracer


@pytest.fixture
def otel() -> Iterator[Otel]:
    """The real SDK, in memory, enabled for the test and disabled after it."""
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics.enable(meter_provider=meter_provider, tracer_provider=tracer_provider)
    try:
        yield Otel(reader, exporter, tracer_provider.get_tracer("the-app"))
    finally:
        metrics.disable()
        meter_provider.shutdown()
        tracer_provider.shutdown()


Points = dict[str, list[Any]]


async def collect(reader: InMemoryMetricReader) -> Points:
    """The data points by metric name, collected from another thread, as an exporter's
    reader collects them (the outbox is read on the saver's loop, which must be free)."""
    data = await asyncio.to_thread(reader.get_metrics_data)
    found: Points = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def value(points: Points, name: str, prefix: str) -> float:
    (point,) = [p for p in points.get(name, []) if p.attributes["dualsaver.prefix"] == prefix]
    return point.value


def timings(points: Points, name: str, **attributes: str) -> int:
    """How many durations were recorded with these attributes."""
    found = points.get(name, [])
    return sum(p.count for p in found if attributes.items() <= dict(p.attributes).items())


def children_of(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def saver_spans(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith("DualSaver.")]


def descend_from(spans: list[ReadableSpan], root: ReadableSpan) -> bool:
    """Whether each span's parent is ``root`` or another of ``spans``: none is orphaned."""
    known = {root.context.span_id} | {s.context.span_id for s in spans}
    return all(s.parent is not None and s.parent.span_id in known for s in spans)


async def test_a_graph_run_is_timed_counted_and_traced_under_the_runs_span(
    otel: Otel, redis_url: str, pg_dsn: str, redis_prefix: str
):
    async with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False
    ) as saver:
        await saver.asetup()
        graph = counting_graph(saver)
        with otel.tracer.start_as_current_span("the run"):
            assert (await graph.ainvoke({"count": 0}, run_config("t-1")))["count"] == 2
        assert (await graph.aget_state(run_config("t-1"))).values["count"] == 2  # from Redis
        queued = await saver.alag()
        assert queued > 0
        before = await collect(otel.reader)
        assert value(before, "dualsaver.outbox.length", redis_prefix) == queued
        assert value(before, "dualsaver.outbox.oldest_age", redis_prefix) >= 0
        await saver.aflush()
        after = await collect(otel.reader)

    assert value(after, "dualsaver.outbox.length", redis_prefix) == 0
    assert value(after, "dualsaver.flush.entries", redis_prefix) >= queued
    assert timings(after, "dualsaver.flush.duration", **{"dualsaver.prefix": redis_prefix}) >= 1
    assert value(after, "dualsaver.reads.hot_hits", redis_prefix) >= 1
    assert value(after, "dualsaver.redis.available", redis_prefix) == 1
    assert value(after, "dualsaver.redis.degraded_duration", redis_prefix) == 0
    for operation in ("aget_tuple", "aput", "aput_writes", "aflush"):
        attributes = {"dualsaver.operation": operation, "dualsaver.prefix": redis_prefix}
        assert timings(after, "dualsaver.operation.duration", **attributes) >= 1, operation

    spans = otel.spans.get_finished_spans()
    (run,) = [s for s in spans if s.name == "the run"]
    in_run = children_of(spans, run)
    assert {"DualSaver.aget_tuple", "DualSaver.aput", "DualSaver.aput_writes"} <= {
        s.name for s in in_run
    }
    run_trace = run.context.trace_id
    assert {s.context.trace_id for s in in_run} == {run_trace}
    assert all(s.attributes["langgraph.thread_id"] == "t-1" for s in in_run)
    traced = [s for s in saver_spans(spans) if s.context.trace_id == run_trace]
    assert descend_from(traced, run)  # aflush in a first read's reconcile: a grandchild


def test_the_sync_api_traces_its_calls_under_the_callers_span(
    otel: Otel, redis_url: str, pg_dsn: str, redis_prefix: str
):
    with DualSaver.from_conn_string(
        redis_url, pg_dsn, prefix=redis_prefix, background_flush=False
    ) as saver:
        saver.setup()
        graph = counting_graph(saver)
        with otel.tracer.start_as_current_span("the run"):
            assert graph.invoke({"count": 0}, run_config("t-sync"))["count"] == 2
            assert len(list(saver.list(run_config("t-sync")))) >= 3

    spans = otel.spans.get_finished_spans()
    (run,) = [s for s in spans if s.name == "the run"]
    in_run = {s.name for s in children_of(spans, run)}
    assert {"DualSaver.aget_tuple", "DualSaver.aput", "DualSaver.alist"} <= in_run
    assert descend_from(saver_spans(spans), run)


@pytest.mark.pure
def test_metrics_off_leave_the_savers_own_code_in_place():
    def defined_in_package(function: Any) -> bool:
        return "langgraph_dualsaver" in function.__code__.co_filename and (
            "metrics.py" not in function.__code__.co_filename
        )

    assert defined_in_package(DualSaver.aput) and defined_in_package(Flusher.run_once)
    metrics.enable(meter_provider=MeterProvider(), tracer_provider=TracerProvider())
    try:
        assert not defined_in_package(DualSaver.aput)
    finally:
        metrics.disable()
    for name in ("aput", "aput_writes", "aget_tuple", "alist", "aflush"):
        assert defined_in_package(getattr(DualSaver, name)), name
    assert defined_in_package(Flusher.run_once)


@pytest.mark.pure
def test_the_package_imports_and_says_what_to_install_without_the_metrics_extra():
    script = (
        "import sys\n"
        "sys.modules['opentelemetry'] = sys.modules['prometheus_client'] = None\n"
        "import langgraph_dualsaver, langgraph_dualsaver.cli, langgraph_dualsaver.metrics as m\n"
        "from langgraph_dualsaver.errors import ConfigurationError\n"
        "for start in (m.enable, lambda: m.serve_prometheus(1)):\n"
        "    try:\n"
        "        start()\n"
        "    except ConfigurationError as exc:\n"
        "        print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("langgraph-dualsaver[metrics]") == 2


# -- Prometheus, from a flush worker ----------------------------------------------------

Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(found: Scrape, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


@dataclass
class Worker:
    process: subprocess.Popen[str]
    port: int

    def alive(self) -> None:
        assert self.process.poll() is None, self.process.stderr.read()  # type: ignore[union-attr]

    async def scrape_until(self, done: Callable[[Scrape], bool], what: str) -> Scrape:
        """Scrape until ``done`` holds, for at most ``DEADLINE_S``."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            found = await asyncio.to_thread(scrape, self.port)
            if done(found):
                return found
            self.alive()
            assert time.monotonic() < deadline, f"{what} within {DEADLINE_S} s: {found}"
            await asyncio.sleep(0.05)


@pytest.fixture
def store(redis_url: str, pg_dsn: str, redis_prefix: str) -> Store:
    return Store(redis_url, pg_dsn, redis_prefix)


@pytest.fixture
def worker(store: Store) -> Iterator[Worker]:
    """``dualsaver flush --follow --metrics-port N``, killed by PID if still running.
    Its long timeout lets a flush wait out the table lock a test holds."""
    port = closed_port()
    command = ["flush", "--follow", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"]
    process = subprocess.Popen(
        [sys.executable, "-m", "langgraph_dualsaver", "--timeout", "60", *command],
        env={**os.environ, **store.env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield Worker(process, port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


async def test_a_flush_worker_serves_its_outbox_lag_and_flushes_to_prometheus(
    store: Store, worker: Worker
):
    prefix = {"dualsaver_prefix": store.prefix}
    async with store.saver(background_flush=False) as saver:
        await saver.asetup()
        assert worker.process.stdout is not None
        banner = worker.process.stdout.readline()  # printed once the endpoint serves
        assert f"metrics at http://127.0.0.1:{worker.port}/metrics" in banner, banner
        first = await worker.scrape_until(
            lambda found: sample(found, "dualsaver_outbox_length", **prefix) == 0,
            "an empty outbox",
        )
        flushed_before = sample(first, "dualsaver_flush_entries_total", **prefix)
        assert flushed_before == 0

        # Holding the data tables keeps every entry queued until the test lets go.
        blocker = await asyncpg.connect(store.postgres_url)
        try:
            async with blocker.transaction():
                await blocker.execute(
                    "LOCK TABLE dualsaver_checkpoints, dualsaver_blobs, dualsaver_writes "
                    "IN EXCLUSIVE MODE"
                )
                await counting_graph(saver).ainvoke({"count": 0}, run_config("t-worker"))
                queued = await saver.alag()
                await worker.scrape_until(
                    lambda found: sample(found, "dualsaver_outbox_length", **prefix) == queued,
                    f"the lag gauge at {queued}",
                )
        finally:
            await blocker.close()

        done = await worker.scrape_until(
            lambda found: sample(found, "dualsaver_outbox_length", **prefix) == 0
            and (sample(found, "dualsaver_flush_entries_total", **prefix) or 0) >= queued,
            "the flush and the lag gauge back at 0",
        )
        assert await saver.alag() == 0
    flushes = sample(done, "dualsaver_flush_duration_seconds_count", **prefix, error_type="")
    assert flushes is not None and flushes >= 1
    assert sample(done, "dualsaver_outbox_dead_letters", **prefix) == 0
    assert sample(done, "process_cpu_seconds_total") is not None

    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=DEADLINE_S) == 0


def test_a_worker_whose_metrics_port_is_taken_says_so_and_exits_1(store: Store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = invoke(
            store, "flush", "--follow", "--metrics-port", port, "--metrics-host", "127.0.0.1"
        )
    assert result.exit_code == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr


@pytest.mark.pure
def test_metrics_port_without_follow_is_a_usage_error():
    result = CliRunner().invoke(app, ["flush", "--metrics-port", "9464"])
    assert result.exit_code == 2
    assert "--metrics-port" in result.output and "needs --follow" in result.output
