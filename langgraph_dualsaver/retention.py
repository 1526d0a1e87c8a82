"""Retention: which checkpoints a policy keeps, and which it removes (pure).

``Retention`` is the policy, checked when it is built. ``decide`` applies it to one
thread's checkpoints as PostgreSQL describes them (``CheckpointFacts``): nothing here
reads or writes a store. ``durable.retention`` carries the decision out in bounded
transactions, and ``chain.retention`` makes the hot tier follow.

The rules, per thread and, inside it, per namespace:

- idle (its newest checkpoint older than ``idle``): ``idle_action="delete"`` removes
  the thread, ``"keep_latest"`` keeps only each namespace's latest checkpoint;
- otherwise, checkpoints beyond the newest ``keep_last`` of their namespace, or older
  than ``max_age``, are removed;
- never removed: a namespace's latest checkpoint, and a checkpoint holding an
  interrupt nothing has resumed (an ``__interrupt__`` write, no child). The ancestors a
  kept checkpoint's DeltaChannels need are added by ``durable.retention`` (they depend
  on which blobs hold values, which only SQL sees);
- a thread waiting at an interrupt (some namespace's latest checkpoint holds one) is
  never deleted unless ``delete_waiting``: it is pruned to its latest instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from langgraph_dualsaver.errors import ConfigurationError

__all__ = [
    "IDLE_ACTIONS",
    "CheckpointFacts",
    "Decision",
    "Retention",
    "decide",
    "delta_channels",
    "parse_duration",
]

IdleAction = Literal["delete", "keep_latest"]
IDLE_ACTIONS: tuple[IdleAction, ...] = ("delete", "keep_latest")


def _positive_duration(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ConfigurationError(f"{name} must be a positive timedelta or None, got {value!r}")


def _positive_int(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if type(value) is not int or value < 1:
        allowed = "an int of 1 or more" + (" or None" if optional else "")
        raise ConfigurationError(f"{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Retention:
    """How long checkpoints are kept. Every rule is off when ``None``; at least one
    must be on.

    Args:
        idle: a thread whose newest checkpoint is older than this is idle.
        idle_action: what happens to an idle thread: ``"delete"`` (the whole thread)
            or ``"keep_latest"`` (each namespace's latest checkpoint stays).
        keep_last: on any thread, keep at most this many newest checkpoints per namespace.
        max_age: on any thread, remove checkpoints older than this.
        delete_waiting: let ``idle_action="delete"`` delete a thread that waits at an
            interrupt (by default it is pruned to its latest checkpoint instead).
        interval: how often the flusher workers start a sweep over every thread.
        threads_per_batch: threads a worker looks at before it goes back to flushing.
        rows_per_transaction: most checkpoints (with their writes and blobs) one
            transaction removes, so no lock is held long.
    """

    idle: timedelta | None = None
    idle_action: IdleAction = "keep_latest"
    keep_last: int | None = None
    max_age: timedelta | None = None
    delete_waiting: bool = False
    interval: timedelta = timedelta(hours=1)
    threads_per_batch: int = 100
    rows_per_transaction: int = 500

    def __post_init__(self) -> None:
        _positive_duration("idle", self.idle)
        _positive_duration("max_age", self.max_age)
        _positive_int("keep_last", self.keep_last, optional=True)
        if self.idle_action not in IDLE_ACTIONS:
            raise ConfigurationError(
                f"idle_action must be one of {', '.join(IDLE_ACTIONS)}, got {self.idle_action!r}"
            )
        if not isinstance(self.delete_waiting, bool):
            raise ConfigurationError(
                f"delete_waiting must be True or False, got {self.delete_waiting!r}"
            )
        if not isinstance(self.interval, timedelta) or self.interval <= timedelta(0):
            raise ConfigurationError(
                f"interval must be a positive timedelta, got {self.interval!r}"
            )
        _positive_int("threads_per_batch", self.threads_per_batch, optional=False)
        _positive_int("rows_per_transaction", self.rows_per_transaction, optional=False)
        if self.idle is None and self.keep_last is None and self.max_age is None:
            raise ConfigurationError(
                "a Retention needs at least one of idle=, keep_last= or max_age=; "
                "without one it would remove nothing"
            )

    def describe(self) -> str:
        """The rules in words, for logs and the CLI."""
        parts = []
        if self.idle is not None:
            parts.append(f"idle > {_duration_text(self.idle)}: {self.idle_action}")
        if self.keep_last is not None:
            parts.append(f"keep last {self.keep_last}")
        if self.max_age is not None:
            parts.append(f"max age {_duration_text(self.max_age)}")
        if self.delete_waiting:
            parts.append("waiting threads may be deleted")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class CheckpointFacts:
    """What retention needs to know of one stored checkpoint."""

    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    created_at: datetime
    interrupted: bool
    """It holds an ``__interrupt__`` pending write."""
    delta_channels: tuple[str, ...] = ()
    """The DeltaChannels it has history for since their last snapshot."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy does to one thread."""

    action: Literal["keep", "prune", "delete"]
    kept: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Per namespace, the checkpoints the rules keep (before DeltaChannel ancestors)."""
    removed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Per namespace, the checkpoints the rules remove, oldest first."""
    waiting: bool = False
    """Some namespace's latest checkpoint holds an interrupt."""
    reason: str = ""


def decide(policy: Retention, checkpoints: Sequence[CheckpointFacts], now: datetime) -> Decision:
    """``policy`` applied to one thread's checkpoints at ``now``."""
    if not checkpoints:
        return Decision("keep", reason="no checkpoints")
    by_ns: dict[str, list[CheckpointFacts]] = {}
    for facts in checkpoints:
        by_ns.setdefault(facts.checkpoint_ns, []).append(facts)
    for rows in by_ns.values():
        rows.sort(key=lambda f: f.checkpoint_id, reverse=True)  # newest first (uuid6)
    waiting = any(rows[0].interrupted for rows in by_ns.values())
    newest = max(f.created_at for f in checkpoints)
    idle = policy.idle is not None and newest < now - policy.idle
    if idle and policy.idle_action == "delete" and (policy.delete_waiting or not waiting):
        return Decision("delete", waiting=waiting, reason=f"idle since {newest.isoformat()}")
    kept: dict[str, frozenset[str]] = {}
    removed: dict[str, tuple[str, ...]] = {}
    for ns, rows in by_ns.items():
        parents = {f.parent_checkpoint_id for f in rows}
        keep = {rows[0].checkpoint_id}
        # An interrupt nothing resumed yet: the run continues from there.
        keep.update(
            f.checkpoint_id for f in rows if f.interrupted and f.checkpoint_id not in parents
        )
        if not idle:
            for rank, facts in enumerate(rows):
                young = policy.max_age is None or facts.created_at >= now - policy.max_age
                recent = policy.keep_last is None or rank < policy.keep_last
                if young and recent:
                    keep.add(facts.checkpoint_id)
        kept[ns] = frozenset(keep)
        gone = tuple(sorted(f.checkpoint_id for f in rows if f.checkpoint_id not in keep))
        if gone:
            removed[ns] = gone
    if idle:
        why = f"idle since {newest.isoformat()}" + (", waiting at an interrupt" if waiting else "")
    else:
        why = "beyond keep_last or max_age"
    return Decision("prune" if removed else "keep", kept, removed, waiting, why if removed else "")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"1h30m"``, ``"90s"``, ``"2w"`` as a positive timedelta;
    ``ConfigurationError`` for anything else."""
    cleaned = text.strip().lower() if isinstance(text, str) else ""
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ConfigurationError(
            f"not a duration: {text!r}; write a number and a unit, e.g. 30d, 12h, 90m, 45s, 2w"
        )
    total = sum((timedelta(**{_UNITS[u]: float(n)}) for n, u in parts), timedelta(0))
    if total <= timedelta(0):
        raise ConfigurationError(f"a duration must be positive, got {text!r}")
    return total


def _duration_text(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{value.total_seconds():g}s"


def delta_channels(counters: object) -> tuple[str, ...]:
    """The channels of a ``counters_since_delta_snapshot`` metadata value."""
    return tuple(sorted(counters)) if isinstance(counters, dict) else ()
