"""The audit trail's records and the pure helpers that make them readable. No I/O.

Pending writes are kept after their step, so they say who (task path, node) wrote what
(channel, value) and when. ``PostgresDurableSaver.aaudit`` returns them as
``AuditEntry`` rows; the CLI and the demo print them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

__all__ = [
    "SUMMARY_WIDTH",
    "AuditEntry",
    "ThreadSummary",
    "audit_entry",
    "node_of",
    "summarize",
]

logger = logging.getLogger(__name__)

SUMMARY_WIDTH = 120
"""Longest ``AuditEntry.summary``, in characters."""

_PULL = "__pregel_pull"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One pending write: who wrote what, at which step.

    ``step`` is the step of the state the write produced: the metadata step of the
    checkpoint it is attached to, plus one (``None`` if that checkpoint is gone).
    ``node`` is the node that ran the task, from its task path (``node_of``); ``None``
    for ``update_state`` and resume writes and ``Send`` tasks, whose paths name none.
    """

    step: int | None
    checkpoint_ns: str
    checkpoint_id: str
    task_id: str
    task_path: str
    node: str | None
    channel: str
    summary: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """A thread's latest root checkpoint and how many root checkpoints it has."""

    thread_id: str
    checkpoint_id: str
    step: int | None
    created_at: datetime
    checkpoints: int


def audit_entry(
    row: Mapping[str, Any], serde: SerializerProtocol, counters: Counter[str]
) -> AuditEntry:
    """An ``AuditEntry`` from a stored write: ``checkpoint_ns``, ``checkpoint_id``,
    ``task_id``, ``task_path``, ``channel``, ``type``, ``blob``, ``created_at`` and the
    metadata ``step`` of its checkpoint (or ``None``).

    A value the serde cannot decode (say, a type outside the allowlist) is shown by its
    type and size; that fallback is logged and counted in ``counters``.
    """
    try:
        summary = summarize(serde.loads_typed((row["type"], row["blob"])))
    except Exception as exc:  # the serde raises whatever its decoder raises
        logger.warning("audit: cannot decode a %s write (%r); showing its size", row["type"], exc)
        counters["audit_undecodable"] += 1
        summary = f"<{row['type']}, {len(row['blob'])} bytes>"
    step = row["step"]
    return AuditEntry(
        step=None if step is None else int(step) + 1,
        checkpoint_ns=row["checkpoint_ns"],
        checkpoint_id=row["checkpoint_id"],
        task_id=row["task_id"],
        task_path=row["task_path"],
        node=node_of(row["task_path"]),
        channel=row["channel"],
        summary=summary,
        created_at=row["created_at"],
    )


def node_of(task_path: str) -> str | None:
    """The node a task ran, from LangGraph's task path string, or ``None``.

    A node's task path is ``"~__pregel_pull, <node>"`` (graph input runs as
    ``__start__``). Paths that name no node: a ``Send`` task's (``~__pregel_push, ...``),
    an ``update_state``'s (``~__interrupt__, <i>``) and a resume's (empty).
    """
    parts = [part.strip() for part in task_path.lstrip("~").split(",")]
    if parts[0] == _PULL and len(parts) > 1 and parts[1]:
        return parts[1]
    if not parts[0] or parts[0].startswith("__"):
        return None
    return parts[0]


def summarize(value: Any, width: int = SUMMARY_WIDTH) -> str:
    """A short, single-line, printable rendering of a written value."""
    text = " ".join(_render(value).split())
    if len(text) > width:
        return text[: width - 1] + "\u2026"
    return text


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if _is_message(value):
        return f"{value.type}: {_render(value.content)}"
    if (
        isinstance(value, Sequence)
        and not isinstance(value, (bytes, bytearray))
        and value
        and all(_is_message(item) for item in value)
    ):
        return " | ".join(_render(item) for item in value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_render(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _is_message(value: Any) -> bool:
    return isinstance(getattr(value, "type", None), str) and hasattr(value, "content")
