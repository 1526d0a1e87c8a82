"""Metrics and traces for dashboards: OpenTelemetry in the app, Prometheus in flush workers.

Off by default, and free when off: nothing in the savers calls into this module.
``enable()`` instruments ``DualSaver`` the way OpenTelemetry's instrumentation libraries
do (their ``instrument()``): it wraps the saver's operations and the flusher's passes
in place, for the whole process, and ``disable()`` puts the originals back. It is
process-wide rather than a ``DualSaver(metrics=True)`` flag because OpenTelemetry's
providers are process-wide too, savers are built in many places (``from_env``, the CLI,
the app's own code), and a flag checked on every call would cost every call, even off.

While enabled:

- each saver call (``aget_tuple``, ``aput``, ``alist``, ... and their sync twins, which
  run them) is a span, a child of the OpenTelemetry context current where the call was
  made (LangGraph's run, where a tracing integration set one), and a
  ``dualsaver.operation.duration`` sample;
- each flush pass that moved entries (or failed) is a ``dualsaver.flush.duration`` sample;
- what the savers already count (hot hits and misses, backfills, degraded reads and
  writes; entries flushed, dead-lettered, refused) is reported as counters, and the
  outbox (length, oldest entry's age, dead letters) and Redis' availability as gauges,
  all read when the metrics are collected, never on a saver call.

``serve_prometheus()`` serves the same metrics over HTTP, named as OpenTelemetry's
Prometheus exporter names them (``dualsaver flush --follow --metrics-port N``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from langgraph_dualsaver.chain.outbox import Outbox
from langgraph_dualsaver.errors import ConfigurationError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.context import Context
    from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from prometheus_client import Histogram as PrometheusHistogram
    from prometheus_client.metrics_core import Metric

    from langgraph_dualsaver.chain.flusher import Flusher
    from langgraph_dualsaver.chain.saver import DualSaver

__all__ = [
    "SPECS",
    "PrometheusEndpoint",
    "Spec",
    "disable",
    "enable",
    "serve_prometheus",
    "watch",
]

logger = logging.getLogger(__name__)

_SCOPE = "langgraph_dualsaver"
_EXTRA_HINT = "pip install 'langgraph-dualsaver[metrics]'"
BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Histogram bounds: a hot read takes a fraction of a millisecond, a blocked flush seconds."""
_READ_TIMEOUT_S = 3.0

OPERATION = "dualsaver.operation"
PREFIX = "dualsaver.prefix"
ERROR_TYPE = "error.type"


# -- what is reported -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric: its OpenTelemetry name, and the Prometheus name derived from it."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    unit: str
    description: str

    @property
    def prometheus_name(self) -> str:
        """As OpenTelemetry's Prometheus exporter names it (the client adds ``_total``)."""
        return self.name.replace(".", "_") + ("_seconds" if self.unit == "s" else "")


OPERATION_DURATION = Spec(
    "dualsaver.operation.duration", "histogram", "s", "Time a DualSaver call took, by operation"
)
FLUSH_DURATION = Spec(
    "dualsaver.flush.duration", "histogram", "s", "Time a flush pass that moved entries took"
)
FLUSHED = Spec("dualsaver.flush.entries", "counter", "{entry}", "Outbox entries made durable")
DEAD_LETTERED = Spec(
    "dualsaver.flush.dead_lettered", "counter", "{entry}", "Outbox entries dead-lettered"
)
REFUSED = Spec(
    "dualsaver.flush.refused", "counter", "{entry}", "Records refused: their thread was deleted"
)
FAILED_PASSES = Spec(
    "dualsaver.flush.failed_passes", "counter", "{pass}", "Flush passes that failed unexpectedly"
)
HOT_HITS = Spec("dualsaver.reads.hot_hits", "counter", "{read}", "Reads Redis answered")
HOT_MISSES = Spec("dualsaver.reads.hot_misses", "counter", "{read}", "Reads PostgreSQL answered")
DEGRADED_READS = Spec("dualsaver.reads.degraded", "counter", "{read}", "Reads while Redis was down")
DEGRADED_WRITES = Spec(
    "dualsaver.writes.degraded", "counter", "{write}", "Writes while Redis was down"
)
BACKFILLS = Spec("dualsaver.backfills", "counter", "{thread}", "Threads put back into Redis")
OUTBOX_LENGTH = Spec(
    "dualsaver.outbox.length", "gauge", "{entry}", "Outbox entries not yet durable"
)
OUTBOX_AGE = Spec(
    "dualsaver.outbox.oldest_age", "gauge", "s", "Age of the oldest entry not yet durable"
)
DEAD_LETTERS = Spec("dualsaver.outbox.dead_letters", "gauge", "{entry}", "Dead letters held")
REDIS_AVAILABLE = Spec(
    "dualsaver.redis.available", "gauge", "", "1 while this process reaches Redis, else 0"
)
DEGRADED_FOR = Spec(
    "dualsaver.redis.degraded_duration", "gauge", "s", "Time this process has been degraded"
)

OBSERVED = (
    FLUSHED, DEAD_LETTERED, REFUSED, FAILED_PASSES, HOT_HITS, HOT_MISSES, DEGRADED_READS,
    DEGRADED_WRITES, BACKFILLS, OUTBOX_LENGTH, OUTBOX_AGE, DEAD_LETTERS, REDIS_AVAILABLE,
    DEGRADED_FOR,
)  # fmt: skip
SPECS = (OPERATION_DURATION, FLUSH_DURATION, *OBSERVED)
"""Every metric reported, for dashboards and docs."""


# -- the savers being reported ----------------------------------------------------------


@dataclass(slots=True)
class _Watch:
    loop: asyncio.AbstractEventLoop | None
    """The loop the saver last ran on: its outbox is read there."""
    app: bool
    """Whether it served calls (an app's saver), not only flushed (a worker's)."""


class _Registry:
    """The savers seen, weakly: one that is dropped stops being reported."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._savers: weakref.WeakKeyDictionary[DualSaver, _Watch] = weakref.WeakKeyDictionary()

    def note(self, saver: DualSaver, loop: asyncio.AbstractEventLoop | None, *, app: bool) -> None:
        current = self._savers.get(saver)
        if current is not None and current.loop is loop and (current.app or not app):
            return
        with self._lock:
            was_app = current is not None and current.app
            kept_loop = current.loop if current is not None else None
            self._savers[saver] = _Watch(loop or kept_loop, app or was_app)

    def items(self) -> list[tuple[DualSaver, _Watch]]:
        with self._lock:
            return list(self._savers.items())


_REGISTRY = _Registry()


def watch(saver: DualSaver) -> None:
    """Report this saver's outbox and flush counters from now on, before it serves a
    call (a flush worker's saver never does). Call it on the saver's event loop."""
    _REGISTRY.note(saver, _running_loop(), app=False)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# -- readings: what the savers count, and the outbox ------------------------------------

Readings = dict[tuple[Spec, str], float]
"""Values by metric and prefix."""


def readings(specs: Collection[Spec] = OBSERVED) -> Readings:
    """These observed metrics of every saver seen, summed per prefix."""
    found: Readings = {}
    by_prefix: dict[str, list[tuple[DualSaver, _Watch]]] = {}
    for saver, seen in _REGISTRY.items():
        prefix = saver.hot.prefix
        by_prefix.setdefault(prefix, []).append((saver, seen))
        own = _flush_counts(saver) + (_app_counts(saver) if seen.app else [])
        for spec, value in own:
            if spec in specs:
                found[(spec, prefix)] = _merged(spec, found.get((spec, prefix)), value)
    wanted = [spec for spec in _OUTBOX_READS if spec in specs]
    for prefix, members in by_prefix.items() if wanted else ():
        for spec, value in _outbox(prefix, members, wanted):
            found[(spec, prefix)] = value
    return found


def _merged(spec: Spec, old: float | None, new: float) -> float:
    if old is None:
        return new
    if spec.kind == "counter":
        return old + new
    return min(old, new) if spec is REDIS_AVAILABLE else max(old, new)


def _flush_counts(saver: DualSaver) -> list[tuple[Spec, float]]:
    flushers = saver.flushers
    return [
        (FLUSHED, sum(f.flushed for f in flushers)),
        (DEAD_LETTERED, sum(f.dead_lettered for f in flushers)),
        (REFUSED, sum(f.refused for f in flushers)),
        (FAILED_PASSES, sum(f.failed_passes for f in flushers)),
    ]


def _app_counts(saver: DualSaver) -> list[tuple[Spec, float]]:
    counts = saver.counts()
    down_for = counts.redis_down_for_s
    return [
        (HOT_HITS, counts.hot_hits),
        (HOT_MISSES, counts.hot_misses),
        (DEGRADED_READS, counts.degraded_reads),
        (DEGRADED_WRITES, counts.degraded_writes),
        (BACKFILLS, counts.backfills),
        (REDIS_AVAILABLE, 1.0 if down_for is None else 0.0),
        (DEGRADED_FOR, 0.0 if down_for is None else down_for),
    ]


async def _oldest_age(outbox: Outbox) -> float:
    return await outbox.oldest_age_s() or 0.0


_OUTBOX_READS: dict[Spec, Callable[[Outbox], Awaitable[float]]] = {
    OUTBOX_LENGTH: Outbox.length,
    OUTBOX_AGE: _oldest_age,
    DEAD_LETTERS: Outbox.dead_letter_count,
}
"""How each outbox gauge is read: only the gauges collected are (a round trip or two each)."""


def _outbox(
    prefix: str, members: list[tuple[DualSaver, _Watch]], wanted: list[Spec]
) -> list[tuple[Spec, float]]:
    """The prefix's outbox gauges, read on a saver's own loop (a collection runs in
    another thread); none when no loop can be waited for from here, or Redis is down."""
    here = _running_loop()
    for saver, seen in members:
        loop = seen.loop
        if loop is None or loop is here or loop.is_closed() or not loop.is_running():
            continue
        future = asyncio.run_coroutine_threadsafe(_read_outbox(saver, wanted), loop)
        try:
            return future.result(_READ_TIMEOUT_S)
        except Exception as exc:  # Redis down or slow: no reading this time
            future.cancel()
            logger.debug("outbox of prefix %r not read: %r", prefix, exc)
            return []
    return []


async def _read_outbox(saver: DualSaver, wanted: list[Spec]) -> list[tuple[Spec, float]]:
    outbox = saver.flusher.outbox
    return [(spec, await _OUTBOX_READS[spec](outbox)) for spec in wanted]


# -- recording ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Otel:
    tracer: Tracer
    histograms: Mapping[Spec, Histogram]


@dataclass(frozen=True, slots=True)
class _Prometheus:
    histograms: Mapping[Spec, PrometheusHistogram]


@dataclass(slots=True)
class _State:
    otel: _Otel | None = None
    prometheus: _Prometheus | None = None
    originals: list[tuple[type, str, Any]] = field(default_factory=list)


_STATE = _State()


def _attributes(prefix: str, operation: str | None, error: str | None) -> dict[str, str]:
    found = {PREFIX: prefix}
    if operation is not None:
        found[OPERATION] = operation
    if error is not None:
        found[ERROR_TYPE] = error
    return found


def _record(spec: Spec, seconds: float, attributes: dict[str, str]) -> None:
    otel, prometheus = _STATE.otel, _STATE.prometheus
    if otel is not None:
        otel.histograms[spec].record(seconds, attributes)
    if prometheus is not None:
        histogram = prometheus.histograms[spec]
        labels = {name: attributes.get(name, "") for name in _label_names(spec)}
        histogram.labels(**{_label(k): v for k, v in labels.items()}).observe(seconds)


def _label_names(spec: Spec) -> tuple[str, ...]:
    if spec is OPERATION_DURATION:
        return (OPERATION, PREFIX, ERROR_TYPE)
    return (PREFIX, ERROR_TYPE)


def _label(attribute: str) -> str:
    return attribute.replace(".", "_")


def _error_name(exc: BaseException) -> str:
    return type(exc).__qualname__


# -- the wrappers -------------------------------------------------------------------------

_OPERATIONS = (
    "aget_tuple", "aput", "aput_writes", "adelete_thread", "adelete_for_runs", "acopy_thread",
    "aprune", "aget_delta_channel_history", "aflush",
)  # fmt: skip


def _caller_context() -> Context | None:
    if _STATE.otel is None:
        return None
    from opentelemetry import context

    return context.get_current()


def _span_attributes(saver: DualSaver, name: str, args: tuple[Any, ...]) -> dict[str, str]:
    found = {OPERATION: name, PREFIX: saver.hot.prefix, "dualsaver.mode": saver.mode}
    first = args[0] if args else None
    configurable = first.get("configurable") if isinstance(first, Mapping) else None
    if isinstance(configurable, Mapping) and configurable.get("thread_id") is not None:
        found["langgraph.thread_id"] = str(configurable["thread_id"])
    elif name == "adelete_thread" and isinstance(first, str):
        found["langgraph.thread_id"] = first
    return found


def _operation(name: str, original: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(original)
    def call(self: DualSaver, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        # Not ``async def``: this runs where the call is made, so the context captured
        # is the caller's even when the sync API runs the coroutine in another thread.
        return _timed_call(name, original, self, args, kwargs, _caller_context())

    return call


async def _timed_call(
    name: str,
    original: Callable[..., Coroutine[Any, Any, Any]],
    saver: DualSaver,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parent: Context | None,
) -> Any:
    _REGISTRY.note(saver, asyncio.get_running_loop(), app=True)
    otel = _STATE.otel
    span: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if otel is not None:
        attributes = _span_attributes(saver, name, args)
        span = otel.tracer.start_as_current_span(
            f"DualSaver.{name}", context=parent, attributes=attributes
        )
    error = None
    start = time.perf_counter()
    try:
        with span:
            return await original(saver, *args, **kwargs)
    except BaseException as exc:
        error = _error_name(exc)
        raise
    finally:
        seconds = time.perf_counter() - start
        _record(OPERATION_DURATION, seconds, _attributes(saver.hot.prefix, name, error))


def _listing(
    original: Callable[..., AsyncGenerator[Any, None]],
) -> Callable[..., AsyncGenerator[Any, None]]:
    @functools.wraps(original)
    def call(self: DualSaver, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        return _timed_listing(original, self, args, kwargs, _caller_context())

    return call


async def _timed_listing(
    original: Callable[..., AsyncGenerator[Any, None]],
    saver: DualSaver,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parent: Context | None,
) -> AsyncGenerator[Any, None]:
    """``alist``, timed while it works (not while the caller holds an item), its span
    made current only inside each step: a listing resumes in other contexts."""
    _REGISTRY.note(saver, asyncio.get_running_loop(), app=True)
    span = _start_span(saver, "alist", args, parent)
    items = original(saver, *args, **kwargs)
    spent, error = 0.0, None
    try:
        while True:
            start = time.perf_counter()
            try:
                with _current(span):
                    item = await anext(items)
            except StopAsyncIteration:
                break
            finally:
                spent += time.perf_counter() - start
            yield item
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = _error_name(exc)
        _failed(span, exc)
        raise
    finally:
        await items.aclose()
        if span is not None:
            span.end()
        _record(OPERATION_DURATION, spent, _attributes(saver.hot.prefix, "alist", error))


def _start_span(
    saver: DualSaver, name: str, args: tuple[Any, ...], parent: Context | None
) -> Span | None:
    otel = _STATE.otel
    if otel is None:
        return None
    attributes = _span_attributes(saver, name, args)
    return otel.tracer.start_span(f"DualSaver.{name}", context=parent, attributes=attributes)


def _current(span: Span | None) -> contextlib.AbstractContextManager[Any]:
    """The span as the current one, its status left alone (the listing sets it)."""
    if span is None:
        return contextlib.nullcontext()
    from opentelemetry import trace

    return trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


def _failed(span: Span | None, exc: BaseException) -> None:
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)))


def _flush_pass(original: Callable[[Flusher], Coroutine[Any, Any, int]]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def run_once(self: Flusher) -> int:
        start = time.perf_counter()
        try:
            moved = await original(self)
        except Exception as exc:
            seconds = time.perf_counter() - start
            _record(FLUSH_DURATION, seconds, _attributes(self.hot.prefix, None, _error_name(exc)))
            raise
        if moved:
            seconds = time.perf_counter() - start
            _record(FLUSH_DURATION, seconds, _attributes(self.hot.prefix, None, None))
        return moved

    return run_once


def _install() -> None:
    """Wrap the saver's operations and the flusher's pass, once."""
    if _STATE.originals:
        return
    from langgraph_dualsaver.chain.flusher import Flusher
    from langgraph_dualsaver.chain.saver import DualSaver

    wrappers: list[tuple[type, str, Any]] = [
        (DualSaver, name, _operation(name, DualSaver.__dict__[name])) for name in _OPERATIONS
    ]
    wrappers.append((DualSaver, "alist", _listing(DualSaver.__dict__["alist"])))
    wrappers.append((Flusher, "run_once", _flush_pass(Flusher.__dict__["run_once"])))
    for owner, name, wrapper in wrappers:
        _STATE.originals.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, wrapper)


def _uninstall_if_idle() -> None:
    """With no exporter left, put the originals back: off costs nothing again."""
    if _STATE.otel is not None or _STATE.prometheus is not None:
        return
    while _STATE.originals:
        owner, name, original = _STATE.originals.pop()
        setattr(owner, name, original)


def _require(module: str) -> ModuleType:
    try:
        return import_module(module)
    except ImportError as exc:
        raise ConfigurationError(f"metrics need the 'metrics' extra: {_EXTRA_HINT}") from exc


def _version() -> str:
    try:
        return version("langgraph-dualsaver")
    except PackageNotFoundError:  # run from a source tree
        return "0"


# -- OpenTelemetry ------------------------------------------------------------------------


def enable(
    meter_provider: MeterProvider | None = None, tracer_provider: TracerProvider | None = None
) -> None:
    """Report every ``DualSaver`` of this process to OpenTelemetry: spans around each
    call, a latency histogram, counters and gauges (see the module's docstring).

    Without providers, the global ones (``opentelemetry.metrics.set_meter_provider``,
    ``opentelemetry.trace.set_tracer_provider``) are used, as instrumentation libraries
    do. Calling it again replaces the providers. Raises ``ConfigurationError`` without
    the ``metrics`` extra.
    """
    metrics_api = _require("opentelemetry.metrics")
    trace_api = _require("opentelemetry.trace")
    meter = (meter_provider or metrics_api.get_meter_provider()).get_meter(_SCOPE, _version())
    tracer = (tracer_provider or trace_api.get_tracer_provider()).get_tracer(_SCOPE, _version())
    otel = _Otel(
        tracer,
        {spec: _otel_histogram(meter, spec) for spec in (OPERATION_DURATION, FLUSH_DURATION)},
    )
    for spec in OBSERVED:
        create = (
            meter.create_observable_counter
            if spec.kind == "counter"
            else meter.create_observable_gauge
        )
        create(spec.name, [_observer(otel, spec)], unit=spec.unit, description=spec.description)
    _STATE.otel = otel
    _install()


def disable() -> None:
    """Stop reporting to OpenTelemetry; its instruments observe nothing from now on."""
    _STATE.otel = None
    _uninstall_if_idle()


def _otel_histogram(meter: Meter, spec: Spec) -> Histogram:
    return meter.create_histogram(
        spec.name,
        unit=spec.unit,
        description=spec.description,
        explicit_bucket_boundaries_advisory=BUCKETS_S,
    )


def _observer(otel: _Otel, spec: Spec) -> Callable[[CallbackOptions], Iterable[Observation]]:
    from opentelemetry.metrics import Observation

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        if _STATE.otel is not otel:  # disabled, or enabled again with other providers
            return []
        return [
            Observation(value, {PREFIX: prefix}) for (_, prefix), value in readings({spec}).items()
        ]

    return observe


# -- Prometheus ---------------------------------------------------------------------------


class PrometheusEndpoint:
    """The HTTP server ``serve_prometheus`` started; ``close()`` stops it."""

    def __init__(
        self, server: WSGIServer, thread: threading.Thread, instruments: _Prometheus
    ) -> None:
        self._server = server
        self._thread = thread
        self._instruments = instruments

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/metrics"

    def close(self) -> None:
        """Stop serving; with nothing else enabled, the saver's methods are put back."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        if _STATE.prometheus is self._instruments:
            _STATE.prometheus = None
            _uninstall_if_idle()


def serve_prometheus(port: int, host: str = "0.0.0.0") -> PrometheusEndpoint:
    """Serve the metrics at ``http://host:port/metrics`` from a daemon thread, with the
    process collectors Prometheus exporters carry. One endpoint per process.

    Raises ``OSError`` if the port cannot be bound, ``ConfigurationError`` without the
    ``metrics`` extra.
    """
    client = _require("prometheus_client")
    registry = client.CollectorRegistry()
    for collector in (client.ProcessCollector, client.PlatformCollector, client.GCCollector):
        collector(registry=registry)
    instruments = _Prometheus(
        {
            spec: _prometheus_histogram(client, registry, spec)
            for spec in (OPERATION_DURATION, FLUSH_DURATION)
        }
    )
    registry.register(_Collector())
    server, thread = client.start_http_server(port, addr=host, registry=registry)
    _STATE.prometheus = instruments
    _install()
    return PrometheusEndpoint(server, thread, instruments)


def _prometheus_histogram(client: ModuleType, registry: Any, spec: Spec) -> PrometheusHistogram:
    histogram: PrometheusHistogram = client.Histogram(
        spec.prometheus_name,
        spec.description,
        [_label(name) for name in _label_names(spec)],
        registry=registry,
        buckets=BUCKETS_S,
    )
    return histogram


class _Collector:
    """The observed metrics, read at each scrape."""

    def describe(self) -> list[Metric]:
        return []  # read nothing when registered

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        found = readings()
        for spec in OBSERVED:
            kind = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = kind(spec.prometheus_name, spec.description, labels=[_label(PREFIX)])
            for (observed, prefix), value in found.items():
                if observed is spec:
                    family.add_metric([prefix], value)
            yield family
