"""Exclusive runs (``exclusive_runs=True``): who is running a thread, and what each of
its writes claims. The stores enforce the claims, atomically with the write: the hot
tier in its STORE script (``hot.scripts``), PostgreSQL in ``dualsaver_claim``
(``durable.sql``, migration 10).

A *run* is one graph invocation: LangGraph passes every root-namespace saver call of
it the same ``__pregel_runtime`` object, and a new one to the next invocation. Its
identity (the *holder*) is the caller's ``run_id`` (``metadata``/``configurable``, as
LangGraph Platform sets it) or a token minted when the run first reads the thread,
``host/pid/short-uuid``, kept for as long as the run's stream writer lives (a closure
LangGraph makes per invocation; the Runtime itself cannot be weakly referenced).
Calls without a runtime (``update_state``, direct use) are *one-shot*: refused while
another run holds the thread, never holding it themselves.

A run holds a thread's *lease* (holder, until) from its first root write, renewed by
each, and lets it go with its terminal checkpoint (no pending trigger) or its
``__interrupt__`` / ``__error__`` writes; a crashed run's lease expires. A root write
while another holder's lease is live is refused (``ThreadBusyError``, ``"busy"``); a
run's root checkpoint whose parent is not the thread's newest root checkpoint is
refused too (``"moved"``: the run read a state that is no longer the latest), unless
the run addressed a past checkpoint (time travel) or the put is a ``fork``/``update``.
Subgraph namespaces are never refused.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT

from langgraph_dualsaver.errors import ConfigurationError, ThreadBusyError

__all__ = [
    "Claim",
    "Exclusive",
    "OnBusy",
    "checkpoint_claim",
    "exclusive_settings",
    "is_terminal",
    "note_head",
    "note_read",
    "refusal",
    "retrying",
    "wait_until_free",
    "writes_claim",
]

T = TypeVar("T")
OnBusy = Literal["raise", "wait"]
Op = Literal["check", "take", "release"]

DEFAULT_LEASE = timedelta(seconds=60)
DEFAULT_BUSY_TIMEOUT = timedelta(seconds=30)
_RUNTIME = "__pregel_runtime"
_MAX_RUNS = 65_536
_NO_REPLAY_SOURCES = frozenset({"fork", "update"})


@dataclass(frozen=True, slots=True)
class Exclusive:
    """A saver's exclusive-runs settings (``exclusive_settings`` validates them)."""

    enabled: bool = False
    on_busy: OnBusy = "raise"
    lease: timedelta = DEFAULT_LEASE
    busy_timeout: timedelta = DEFAULT_BUSY_TIMEOUT
    lease_ms: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lease_ms", self.lease // timedelta(milliseconds=1))


def exclusive_settings(
    exclusive_runs: bool = False,
    on_busy: OnBusy = "raise",
    lease: timedelta = DEFAULT_LEASE,
    busy_timeout: timedelta = DEFAULT_BUSY_TIMEOUT,
) -> Exclusive:
    """The settings, or ``ConfigurationError`` naming the bad one."""
    if not isinstance(exclusive_runs, bool):
        raise ConfigurationError(f"exclusive_runs must be a bool, got {exclusive_runs!r}")
    if on_busy not in ("raise", "wait"):
        raise ConfigurationError(f"on_busy must be 'raise' or 'wait', got {on_busy!r}")
    if not isinstance(lease, timedelta) or lease < timedelta(seconds=1):
        raise ConfigurationError(f"lease must be a timedelta of 1 s or more, got {lease!r}")
    if not isinstance(busy_timeout, timedelta) or busy_timeout < timedelta(0):
        raise ConfigurationError(
            f"busy_timeout must be a timedelta of 0 or more, got {busy_timeout!r}"
        )
    return Exclusive(exclusive_runs, on_busy, lease, busy_timeout)


@dataclass(slots=True)
class Claim:
    """What one root write asks of the thread's lease, checked where it is stored.

    ``op``: ``check`` (one-shot: refused if any live lease), ``take`` (take or renew
    the lease), ``release`` (let it go). A holder never takes back a lease it let go:
    LangGraph saves a run's checkpoints in the background, so a write made before the
    run's interrupt may be stored after it. (So a caller's ``run_id`` must be unique
    per invocation, as LangGraph Platform's are.)

    Refused as ``moved``: with ``check_parent``, a checkpoint whose ``parent`` is not
    the thread's newest root checkpoint; with ``check_head``, any write of a run that
    does not hold the lease while the thread's newest root checkpoint is no longer
    ``head``, the one the run read (``None``: the thread must have none). A thread the
    store has no root checkpoint of passes both (Redis may have lost it; the run read
    it elsewhere).
    """

    thread_id: str
    holder: str
    op: Op
    lease_ms: int
    check_parent: bool = False
    parent: str | None = None
    check_head: bool = False
    head: str | None = None


# -- run identity -----------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    holder: str
    addressed: bool
    """The run read a checkpoint by id (time travel): it need not write on the head."""
    read: bool = False
    head: str | None = None
    """The root checkpoint the run read as the thread's latest (once ``read``)."""


_runs: weakref.WeakKeyDictionary[Any, _Run] = weakref.WeakKeyDictionary()
"""Runs by their stream writer: a closure LangGraph makes per invocation, which lives
as long as the run (the Runtime itself takes no weak reference)."""
_runs_by_id: OrderedDict[int, _Run] = OrderedDict()
"""Else by ``id(runtime)``, bounded: each run's first read overwrites a reused id."""
_HOST = socket.gethostname()


def _mint() -> str:
    return f"{_HOST}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def _configurable(config: RunnableConfig) -> Mapping[str, Any]:
    return config.get("configurable") or {}


def _caller_run_id(config: RunnableConfig) -> str | None:
    metadata = config.get("metadata") or {}
    for value in (metadata.get("run_id"), _configurable(config).get("run_id")):
        if value:
            return str(value)
    return None


def _is_root(config: RunnableConfig) -> bool:
    return not _configurable(config).get("checkpoint_ns")


def _writer(runtime: Any) -> Any:
    """The run's own stream writer, if LangGraph made one for this invocation."""
    writer = getattr(runtime, "stream_writer", None)
    return writer if "<locals>" in getattr(writer, "__qualname__", "") else None


def note_read(config: RunnableConfig) -> str | None:
    """At a run's ``aget_tuple``: mint its identity on its first read (a run may read
    twice: new input from a past checkpoint reads it, then the latest). Returns the
    holder, ``None`` when the call is not a root run's."""
    runtime = _configurable(config).get(_RUNTIME)
    if runtime is None or not _is_root(config):
        return None
    addressed = bool(_configurable(config).get("checkpoint_id"))
    writer = _writer(runtime)
    if writer is not None:
        known = _runs.get(writer)
        if known is not None:
            known.addressed = known.addressed or addressed
            return known.holder
        run = _runs[writer] = _Run(_caller_run_id(config) or _mint(), addressed)
        return run.holder
    run = _Run(_caller_run_id(config) or _mint(), addressed)
    _runs_by_id.pop(id(runtime), None)
    _runs_by_id[id(runtime)] = run
    while len(_runs_by_id) > _MAX_RUNS:
        _runs_by_id.popitem(last=False)
    return run.holder


def note_head(config: RunnableConfig, found: CheckpointTuple | None) -> None:
    """After a run's first read of the thread's latest: remember what it read."""
    runtime = _configurable(config).get(_RUNTIME)
    if runtime is None or not _is_root(config) or _configurable(config).get("checkpoint_id"):
        return
    writer = _writer(runtime)
    run = _runs.get(writer) if writer is not None else _runs_by_id.get(id(runtime))
    if run is not None and not run.read:
        run.read = True
        run.head = found.config["configurable"]["checkpoint_id"] if found else None


def _run_of(config: RunnableConfig) -> _Run | None:
    """The run making this call; ``None`` for a one-shot call. A run not seen reading
    is given an identity now, and no parent check."""
    runtime = _configurable(config).get(_RUNTIME)
    if runtime is None:
        return None
    writer = _writer(runtime)
    run = _runs.get(writer) if writer is not None else _runs_by_id.get(id(runtime))
    if run is None:
        run = _Run(_caller_run_id(config) or _mint(), True)
        if writer is not None:
            _runs[writer] = run
        else:
            _runs_by_id[id(runtime)] = run
    return run


# -- claims -----------------------------------------------------------------------------


def is_terminal(checkpoint: Checkpoint) -> bool:
    """Whether no node is left to run: no pending trigger among the channel values (a
    ``branch:to:*`` or ``__start__`` trigger, or a non-empty join or ``Send`` list)."""
    for name, value in (checkpoint.get("channel_values") or {}).items():
        if name == "__start__" or name.startswith("branch:to:"):
            return False
        if (name == "__pregel_tasks" or name.startswith("join:")) and value:
            return False
    return True


def checkpoint_claim(
    settings: Exclusive,
    thread_id: str,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
) -> Claim | None:
    """The claim of a ``put`` (``None``: nothing to check)."""
    if not settings.enabled or not _is_root(config):
        return None
    run = _run_of(config)
    if run is None:
        return Claim(thread_id, "", "check", settings.lease_ms)
    source = (metadata or {}).get("source")
    check = not run.addressed and source not in _NO_REPLAY_SOURCES
    parent = _configurable(config).get("checkpoint_id") or None
    op: Op = "release" if is_terminal(checkpoint) else "take"
    return Claim(thread_id, run.holder, op, settings.lease_ms, check, parent, *_head(run))


def writes_claim(
    settings: Exclusive,
    thread_id: str,
    config: RunnableConfig,
    channels: Sequence[str],
) -> Claim | None:
    """The claim of a ``put_writes``: an interrupt or an error lets the lease go; any
    other write takes it (or renews it)."""
    if not settings.enabled or not _is_root(config):
        return None
    run = _run_of(config)
    if run is None:
        return Claim(thread_id, "", "check", settings.lease_ms)
    op: Op = "release" if any(c in (INTERRUPT, ERROR) for c in channels) else "take"
    return Claim(thread_id, run.holder, op, settings.lease_ms, False, None, *_head(run))


def _head(run: _Run) -> tuple[bool, str | None]:
    """``check_head, head`` for a run's claim: a run that addressed a past checkpoint
    (or whose read was not seen) is not held to the head."""
    return (run.read and not run.addressed), run.head


# -- refusals ---------------------------------------------------------------------------


def refusal(thread_id: str, reply: Sequence[Any]) -> ThreadBusyError | None:
    """The error a store's claim reply means (``busy``/``moved``, holder), if any."""
    if not reply:
        return None
    status = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    if status not in ("busy", "moved"):
        return None
    holder = reply[1] if len(reply) > 1 else ""
    holder = holder.decode("utf-8", "replace") if isinstance(holder, bytes) else str(holder)
    return ThreadBusyError(thread_id, holder, status)


async def retrying(settings: Exclusive, call: Callable[[], Awaitable[T]]) -> T:
    """``call()``; with ``on_busy="wait"``, a ``busy`` refusal is tried again, backing
    off, until ``busy_timeout`` (then the last refusal is raised). ``moved`` never
    waits: the run's state is stale whatever happens next."""
    if settings.on_busy != "wait":
        return await call()
    deadline = time.monotonic() + settings.busy_timeout.total_seconds()
    delay = 0.01
    while True:
        try:
            return await call()
        except ThreadBusyError as exc:
            left = deadline - time.monotonic()
            if exc.reason != "busy" or left <= 0:
                raise
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.5)


async def wait_until_free(
    settings: Exclusive,
    config: RunnableConfig,
    holder: str | None,
    probe: Callable[[str], Awaitable[tuple[str, int] | None]],
) -> None:
    """At a run's first read with ``on_busy="wait"``: wait (up to ``busy_timeout``)
    while another holder's lease is live, so the run reads the state it leaves.
    ``probe(thread_id)`` returns the live lease ``(holder, ms left)`` or ``None``."""
    if holder is None or settings.on_busy != "wait" or not settings.enabled:
        return
    thread_id = str(_configurable(config).get("thread_id"))

    async def free() -> None:
        held = await probe(thread_id)
        if held is not None and held[0] != holder:
            raise ThreadBusyError(thread_id, held[0])

    await retrying(settings, free)
