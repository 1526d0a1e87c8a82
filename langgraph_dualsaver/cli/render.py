"""Output: rich tables for people, JSON for scripts (``--json``).

Tables go to stdout through ``rich``; when stdout is not a terminal they are plain text
``$COLUMNS`` wide (120 by default), so they can be piped and grepped.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from langgraph_dualsaver.cli.views import to_jsonable
from langgraph_dualsaver.durable.audit import summarize

if TYPE_CHECKING:
    from langgraph_dualsaver.cli.data import ThreadRow
    from langgraph_dualsaver.cli.views import ChannelChange, HistoryRow, TreeLine
    from langgraph_dualsaver.durable.audit import AuditEntry

__all__ = [
    "TREE_LEGEND",
    "audit_table",
    "console",
    "diff_table",
    "history_table",
    "history_tree_table",
    "kv_table",
    "print_json",
    "short_id",
    "threads_table",
    "when",
    "writes_table",
]


def console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS") or 120)
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout (datetimes as ISO 8601, values made JSON)."""
    sys.stdout.write(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n")


def when(value: datetime | str | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SS`` UTC."""
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        value = parsed
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def short_id(checkpoint_id: str | None, keep: int = 12) -> str:
    """The distinctive tail of an id (uuid6 checkpoint ids share their time prefix)."""
    if not checkpoint_id:
        return "-"
    return "\u2026" + checkpoint_id[-keep:] if len(checkpoint_id) > keep + 1 else checkpoint_id


def _step(step: int | None) -> str:
    return "-" if step is None else str(step)


def threads_table(rows: Sequence[ThreadRow]) -> Table:
    """Without the latest checkpoint ids (``--json`` has them; ``show`` defaults to it)."""
    table = _table("threads, newest first (times in UTC)")
    table.add_column("thread", overflow="fold")
    table.add_column("step", justify="right")
    table.add_column("time", no_wrap=True)
    table.add_column("tier")
    table.add_column("checkpoints", justify="right")
    for row in rows:
        table.add_row(
            row.thread_id, _step(row.step), when(row.created_at), row.tier, str(row.checkpoints)
        )
    return table


def _table(title: str | None) -> Table:
    """A compact table: a rule under the header, no vertical lines (greppable)."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)


def history_table(rows: Sequence[HistoryRow], title: str) -> Table:
    days = sorted({when(row.created_at)[:10] for row in rows if row.created_at})
    one_day = len(days) == 1
    if one_day:
        title = f"{title}, {days[0]}"
    table = _table(title)
    table.add_column("checkpoint", no_wrap=True)
    table.add_column("step", justify="right")
    table.add_column("source")
    table.add_column("parent", no_wrap=True)
    table.add_column("time", no_wrap=True)
    table.add_column("fork", no_wrap=True)
    table.add_column("node(s)")
    for row in rows:
        mark = Text(f"{row.children} children", style="bold yellow") if row.is_fork else ""
        stamp = when(row.created_at)
        table.add_row(
            short_id(row.checkpoint_id),
            _step(row.step),
            row.source or "-",
            short_id(row.parent_id),
            stamp[11:] if one_day else stamp[5:],
            mark,
            ", ".join(row.nodes) or "-",
        )
    return table


FORK_MARK = "\u25c6"  # ◆
UPDATE_MARK = "\u270e"  # ✎
CHECKPOINT_MARK = "\u25cf"  # ●
TREE_LEGEND = (
    f"{FORK_MARK} fork point: more than one checkpoint continues from it\n"
    f"{UPDATE_MARK} written by update_state; latest: the checkpoint get_state(config) reads"
)


def _tree_mark(row: HistoryRow) -> Text:
    if row.is_fork:
        return Text(FORK_MARK, style="bold yellow")
    if row.source == "update":
        return Text(UPDATE_MARK, style="bold cyan")
    return Text(CHECKPOINT_MARK)


def _tree_note(line: TreeLine) -> Text:
    row, notes = line.row, Text()
    if row.is_fork:
        notes.append(f"{row.children} children ", style="bold yellow")
    if row.source == "update" and row.changed:
        notes.append(f"sets {', '.join(row.changed)} ", style="bold cyan")
    if line.depth == 0 and row.parent_id:
        notes.append(f"parent {short_id(row.parent_id)} not shown ")
    if line.latest:
        notes.append("latest", style="bold green")
    notes.rstrip()
    return notes


def history_tree_table(lines: Sequence[TreeLine], title: str) -> Table:
    """``history --tree``: the branch lines and a mark before each checkpoint (◆ a fork
    point, ✎ an ``update_state``, ● any other), oldest first."""
    days = sorted({when(line.row.created_at)[:10] for line in lines if line.row.created_at})
    one_day = len(days) == 1
    if one_day:
        title = f"{title}, {days[0]}"
    table = _table(title)
    for name in ("tree", "checkpoint", "step", "source", "time"):
        table.add_column(name, no_wrap=True, justify="right" if name == "step" else "left")
    table.add_column("node(s)", min_width=14)  # gives way when the terminal is narrow
    table.add_column("note", no_wrap=True)
    for line in lines:
        row, stamp = line.row, when(line.row.created_at)
        table.add_row(
            Text.assemble((line.art, "dim"), _tree_mark(row)),
            short_id(row.checkpoint_id),
            _step(row.step),
            row.source or "-",
            stamp[11:] if one_day else stamp[5:],
            # One line per checkpoint, or the branch lines would break: long names are
            # cut (history without --tree shows them whole).
            Text(", ".join(row.nodes) or "-", no_wrap=True, overflow="ellipsis"),
            _tree_note(line),
        )
    return table


def kv_table(pairs: Iterable[tuple[str, Any]], title: str | None = None) -> Table:
    table = Table(show_header=False, title=title, title_justify="left", box=None)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value")
    for key, value in pairs:
        table.add_row(key, value if isinstance(value, Text) else str(value))
    return table


def values_table(values: Mapping[str, Any], title: str) -> Table:
    table = _table(title)
    table.add_column("channel", no_wrap=True)
    table.add_column("value")
    for channel, value in values.items():
        table.add_row(channel, summarize(value, 300))
    return table


def writes_table(writes: Sequence[Mapping[str, Any]], title: str) -> Table:
    table = _table(title)
    table.add_column("task", no_wrap=True)
    table.add_column("node")
    table.add_column("channel", no_wrap=True)
    table.add_column("value")
    for write in writes:
        table.add_row(
            short_id(write["task_id"]),
            write.get("node") or "?",
            write["channel"],
            summarize(write["value"], 200),
        )
    return table


def diff_table(changes: Sequence[ChannelChange], title: str) -> Table:
    table = _table(title)
    table.add_column("channel", no_wrap=True)
    table.add_column("change")
    table.add_column("what")
    styles = {"added": "green", "removed": "red", "changed": "yellow"}
    for change in changes:
        table.add_row(
            change.channel,
            Text(change.status, style=styles.get(change.status, "")),
            change.detail,
        )
    return table


def audit_table(entries: Sequence[AuditEntry], title: str) -> Table:
    days = sorted({when(entry.created_at)[:10] for entry in entries})
    one_day = len(days) == 1
    if one_day:
        title = f"{title}, {days[0]}"
    table = _table(title)
    table.add_column("step", justify="right")
    table.add_column("time", no_wrap=True)
    table.add_column("node")
    table.add_column("channel", no_wrap=True)
    table.add_column("value")
    for entry in entries:
        stamp = when(entry.created_at)
        table.add_row(
            _step(entry.step),
            stamp[11:] if one_day else stamp,
            entry.node or _who(entry),
            entry.channel,
            entry.summary,
        )
    return table


def _who(entry: AuditEntry) -> str:
    """A name for writes no node made: a human's resume value, the graph's input."""
    if entry.channel == "__resume__":
        return "(human)"
    return "(input)" if not entry.task_path else "-"
