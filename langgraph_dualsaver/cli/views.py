"""What the commands show, computed from checkpoints without the graph. Pure: no I/O.

* ``history_rows``: the chain of a thread, newest first, with the node(s) that produced
  each checkpoint and its fork points (a checkpoint with more than one child).
* ``history_tree``: the same rows as a tree, oldest first, with the text art of
  ``history --tree`` and the lane of each branch (the notebooks draw it from that).
* ``next_nodes``: the nodes a checkpoint would run next, from its trigger channels.
* ``diff_values``: what changed between two checkpoints, channel by channel.
* ``to_jsonable``: any channel value as JSON, for ``--json``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from langgraph_dualsaver.durable.audit import summarize

if TYPE_CHECKING:
    from langgraph.checkpoint.base import Checkpoint, CheckpointTuple

    from langgraph_dualsaver.durable.audit import AuditEntry

__all__ = [
    "ChannelChange",
    "HistoryRow",
    "NextStep",
    "TreeLine",
    "changed_channels",
    "diff_values",
    "history_rows",
    "history_tree",
    "is_internal_channel",
    "is_trigger_channel",
    "next_nodes",
    "nodes_by_checkpoint",
    "parse_filter",
    "produced_by",
    "state_values",
    "to_jsonable",
]

START = "__start__"
TASKS = "__pregel_tasks"
BRANCH_PREFIX = "branch:to:"
JOIN_PREFIX = "join:"
# Bookkeeping entries of versions_seen that are not nodes.
_NOT_NODES = frozenset({"__input__", "__interrupt__", "__snapshot_bumps__"})


def is_trigger_channel(channel: str) -> bool:
    """A channel that only says which node runs next (its writes carry no value)."""
    return channel.startswith((BRANCH_PREFIX, JOIN_PREFIX)) or channel == START


def is_internal_channel(channel: str) -> bool:
    """Trigger and bookkeeping channels (``branch:to:*``, ``join:*``, ``__*``), which hold
    no user state."""
    return channel.startswith((BRANCH_PREFIX, JOIN_PREFIX, "__"))


def state_values(values: Mapping[str, Any], *, internal: bool = False) -> dict[str, Any]:
    """The channel values a user sees as state, sorted by channel."""
    return {k: values[k] for k in sorted(values) if internal or not is_internal_channel(k)}


# -- history ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One checkpoint of a thread's chain."""

    checkpoint_id: str
    checkpoint_ns: str
    step: int | None
    source: str | None
    nodes: tuple[str, ...]
    parent_id: str | None
    children: int
    created_at: str | None
    changed: tuple[str, ...] = ()
    """The state channels it changed from its parent (``changed_channels``): what an
    ``update_state`` set, even as a node ``versions_seen`` cannot name."""

    @property
    def is_fork(self) -> bool:
        """More than one checkpoint continues from this one (time travel, a fork)."""
        return self.children > 1


def _checkpoint_id(item: CheckpointTuple) -> str:
    checkpoint_id: str = item.config["configurable"]["checkpoint_id"]
    return checkpoint_id


def _parent_id(item: CheckpointTuple) -> str | None:
    if item.parent_config is None:
        return None
    return item.parent_config["configurable"].get("checkpoint_id") or None


def _seen_by_node(checkpoint: Checkpoint) -> dict[str, dict[str, Any]]:
    seen = checkpoint.get("versions_seen") or {}
    return {node: dict(v or {}) for node, v in seen.items() if node not in _NOT_NODES}


def produced_by(item: CheckpointTuple, parent: CheckpointTuple | None) -> tuple[str, ...]:
    """The nodes whose run produced ``item`` from ``parent``.

    LangGraph records in ``versions_seen[node]`` the channel versions a node read when
    it ran, so the nodes whose entry is new or changed since the parent are exactly the
    tasks of that step (or the ``as_node`` of an ``update_state``). Empty when the
    parent is gone (pruned) or nothing changed.
    """
    if parent is None:
        return ()
    before = _seen_by_node(parent.checkpoint)
    after = _seen_by_node(item.checkpoint)
    return tuple(sorted(node for node, seen in after.items() if before.get(node) != seen))


def changed_channels(item: CheckpointTuple, parent: CheckpointTuple | None) -> tuple[str, ...]:
    """The state channels (no trigger or bookkeeping ones) whose version moved from
    ``parent`` to ``item``, sorted; empty when the parent is gone."""
    if parent is None:
        return ()
    before = parent.checkpoint.get("channel_versions") or {}
    after = item.checkpoint.get("channel_versions") or {}
    return tuple(
        sorted(ch for ch, v in after.items() if not is_internal_channel(ch) and before.get(ch) != v)
    )


def nodes_by_checkpoint(entries: Iterable[AuditEntry]) -> dict[str, tuple[str, ...]]:
    """Nodes that wrote on each checkpoint, in order of their first write."""
    found: dict[str, dict[str, None]] = {}
    for entry in entries:
        if entry.node:
            found.setdefault(entry.checkpoint_id, {})[entry.node] = None
    return {cp: tuple(nodes) for cp, nodes in found.items()}


def history_rows(
    items: Sequence[CheckpointTuple],
    writers: Mapping[str, Sequence[str]] | None = None,
) -> list[HistoryRow]:
    """The rows of ``dualsaver history``, newest first.

    Args:
        items: The thread's checkpoints (one namespace), any order.
        writers: Nodes that wrote on each checkpoint (``nodes_by_checkpoint`` of the
            audit trail): the fallback when ``versions_seen`` names no node, used only
            for a parent with one child (a fork's writes belong to its first branch).
    """
    writers = writers or {}
    by_id = {_checkpoint_id(item): item for item in items}
    children = Counter(p for p in (_parent_id(item) for item in items) if p is not None)
    rows = []
    for item in sorted(items, key=_checkpoint_id, reverse=True):
        parent_id = _parent_id(item)
        metadata = item.metadata or {}
        source = metadata.get("source")
        parent = by_id.get(parent_id) if parent_id else None
        nodes = produced_by(item, parent)
        if not nodes and source == "input":
            nodes = ("(input)",)
        elif not nodes and parent_id and children[parent_id] == 1:
            nodes = tuple(writers.get(parent_id, ()))
        step = metadata.get("step")
        rows.append(
            HistoryRow(
                checkpoint_id=_checkpoint_id(item),
                checkpoint_ns=item.config["configurable"].get("checkpoint_ns", ""),
                step=step if isinstance(step, int) else None,
                source=source if isinstance(source, str) else None,
                nodes=nodes,
                parent_id=parent_id,
                children=children[_checkpoint_id(item)],
                created_at=item.checkpoint.get("ts"),
                changed=changed_channels(item, parent),
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class TreeLine:
    """One checkpoint of ``history_tree``."""

    row: HistoryRow
    art: str
    """The branch lines ``history --tree`` draws before it: ``""`` on the first chain,
    ``"├─"`` / ``"└─"`` where a fork's child starts, ``"│ "`` / ``"  "`` below it."""
    lane: int
    """The branch it is on, numbered in the order they are printed: 0 is the chain from
    the oldest checkpoint, and a fork's first child stays on its parent's lane."""
    depth: int
    """How many of its ancestors are shown."""
    latest: bool
    """The thread's newest checkpoint: the one ``get_state(config)`` reads."""


def _tree_children(
    rows: Sequence[HistoryRow],
) -> tuple[list[HistoryRow], dict[str, list[HistoryRow]]]:
    """The roots (no parent among ``rows``) and each checkpoint's children, oldest first."""
    ids = {row.checkpoint_id for row in rows}
    roots: list[HistoryRow] = []
    children: dict[str, list[HistoryRow]] = {}
    for row in sorted(rows, key=lambda r: r.checkpoint_id):
        if row.parent_id is not None and row.parent_id in ids:
            children.setdefault(row.parent_id, []).append(row)
        else:
            roots.append(row)
    return roots, children


def history_tree(rows: Sequence[HistoryRow]) -> list[TreeLine]:
    """``rows`` (any order) as a tree, oldest first: each branch printed whole, its
    forks' children after it, oldest child first, like ``tree`` but with a chain kept in
    one column. A checkpoint whose parent is not among ``rows`` (pruned, or cut by
    ``--limit``) starts a tree of its own. Iterative: a chain of any length is fine.
    """
    roots, children = _tree_children(rows)
    latest = max((row.checkpoint_id for row in rows), default=None)
    lines: list[TreeLine] = []
    lanes = 0
    # (row, art before it, art below it, its lane if it continues one, depth)
    stack: list[tuple[HistoryRow, str, str, int | None, int]] = [
        (root, "", "", None, 0) for root in reversed(roots)
    ]
    while stack:
        row, art, below, lane, depth = stack.pop()
        if lane is None:
            lane, lanes = lanes, lanes + 1
        lines.append(TreeLine(row, art, lane, depth, row.checkpoint_id == latest))
        kids = children.get(row.checkpoint_id, [])
        if len(kids) == 1:
            stack.append((kids[0], below, below, lane, depth + 1))
            continue
        for index in reversed(range(len(kids))):
            last = index == len(kids) - 1
            stack.append((
                kids[index],
                below + ("└─" if last else "├─"),
                below + ("  " if last else "│ "),
                lane if index == 0 else None,
                depth + 1,
            ))  # fmt: skip
    return lines


# -- next nodes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NextStep:
    """What a checkpoint runs next: ``nodes`` and the trigger channels that say so."""

    nodes: tuple[str, ...]
    triggers: tuple[str, ...]


def _newer(version: Any, seen: Any) -> bool:
    if seen is None:
        return True
    if type(version) is type(seen):
        return bool(version > seen)
    return _major(version) > _major(seen)


def _major(version: Any) -> float:
    if isinstance(version, (int, float)):
        return float(version)
    try:
        return float(str(version).split(".", 1)[0])
    except ValueError:
        return math.inf


def _trigger_node(channel: str) -> str | None:
    if channel.startswith(BRANCH_PREFIX):
        return channel[len(BRANCH_PREFIX) :] or None
    if channel.startswith(JOIN_PREFIX):
        return channel.rsplit(":", 1)[-1] or None
    if channel == START:
        return START
    return None


def next_nodes(checkpoint: Checkpoint) -> NextStep:
    """The nodes the checkpoint triggers, computed as LangGraph does, without the graph.

    A node runs next when one of its trigger channels holds a value with a version the
    node has not seen: ``branch:to:<node>`` (every edge of a ``StateGraph``),
    ``join:<a>+<b>:<node>`` (a join edge) and ``__start__`` (graph input). ``Send``
    packets waiting in ``__pregel_tasks`` add their target nodes. Nodes triggered by
    channels of other shapes (custom Pregel graphs) are not shown.
    """
    values = checkpoint.get("channel_values") or {}
    versions = checkpoint.get("channel_versions") or {}
    seen = checkpoint.get("versions_seen") or {}
    nodes: dict[str, None] = {}
    triggers = []
    for channel in sorted(values):
        node = _trigger_node(channel)
        if node is None or channel not in versions:
            continue
        if _newer(versions[channel], (seen.get(node) or {}).get(channel)):
            nodes[node] = None
            triggers.append(channel)
    for packet in values.get(TASKS) or ():
        node = getattr(packet, "node", None)
        if isinstance(node, str):
            nodes[node] = None
            if TASKS not in triggers:
                triggers.append(TASKS)
    return NextStep(tuple(nodes), tuple(triggers))


# -- diff -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelChange:
    """One channel's change from checkpoint A to checkpoint B."""

    channel: str
    status: str
    """``added``, ``removed``, ``changed`` or ``unchanged``."""
    before: Any
    after: Any
    detail: str


_MISSING = object()


def _describe(before: Any, after: Any) -> str:
    if before is _MISSING:
        return summarize(after)
    if after is _MISSING:
        return f"was {summarize(before)}"
    if isinstance(before, list) and isinstance(after, list):
        if after[: len(before)] == before and len(after) > len(before):
            added = after[len(before) :]
            return f"+{len(added)} item(s): {summarize(added)}"
        return f"{len(before)} -> {len(after)} item(s): {summarize(after)}"
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        parts = []
        for key in sorted(set(before) | set(after), key=str):
            old, new = before.get(key, _MISSING), after.get(key, _MISSING)
            if old is _MISSING:
                parts.append(f"+{key}={summarize(new, 40)}")
            elif new is _MISSING:
                parts.append(f"-{key}")
            elif old != new:
                parts.append(f"{key}: {summarize(old, 30)} -> {summarize(new, 30)}")
        return summarize("; ".join(parts))
    return f"{summarize(before, 55)} -> {summarize(after, 55)}"


def diff_values(
    a: Mapping[str, Any], b: Mapping[str, Any], *, internal: bool = False
) -> list[ChannelChange]:
    """Channel by channel, from ``a`` to ``b``, sorted by channel."""
    changes = []
    for channel in sorted(set(a) | set(b)):
        if not internal and is_internal_channel(channel):
            continue
        before, after = a.get(channel, _MISSING), b.get(channel, _MISSING)
        if before is _MISSING:
            status = "added"
        elif after is _MISSING:
            status = "removed"
        elif before == after:
            status = "unchanged"
        else:
            status = "changed"
        detail = "" if status == "unchanged" else _describe(before, after)
        changes.append(
            ChannelChange(
                channel,
                status,
                None if before is _MISSING else before,
                None if after is _MISSING else after,
                detail,
            )
        )
    return changes


# -- input and JSON ---------------------------------------------------------------------


def parse_filter(pairs: Iterable[str]) -> dict[str, Any]:
    """``["source=loop", "step=3"]`` as a metadata filter. A value is read as JSON when
    it is JSON (``3``, ``true``, ``"3"``), else as a string. Raises ``ValueError``."""
    import json

    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{pair!r} is not key=value")
        try:
            result[key] = json.loads(raw)
        except ValueError:
            result[key] = raw
    return result


def to_jsonable(value: Any) -> Any:
    """A JSON-ready copy of a channel value: messages and other pydantic models as their
    fields, dataclasses as dicts, bytes by size, anything else as its ``repr``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return to_jsonable(dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    slots = getattr(type(value), "__slots__", None)
    if type(value).__name__ == "Send" and slots:
        return {"send": {name: to_jsonable(getattr(value, name, None)) for name in slots}}
    return repr(value)
