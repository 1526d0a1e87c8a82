"""Rich renderings of what the stores hold, shared by the demo and the notebooks.

Everything shown is read back from the stores (``get_state``, ``get_state_history``,
``audit``, ``thread_info``, ``stats``); nothing is taken from the process's memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langgraph.types import StateSnapshot
from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from langgraph_dualsaver.app.agents import NODES

__all__ = [
    "audit_table",
    "counters_table",
    "history_table",
    "interrupt_panel",
    "short_id",
    "state_table",
    "tiers_table",
]


def short_id(checkpoint_id: str | None) -> str:
    """The distinctive tail of a uuid6 checkpoint id (its head is the clock)."""
    return "\u2026" + checkpoint_id[-8:] if checkpoint_id else "-"


def _checkpoint_id(snapshot: StateSnapshot) -> str:
    return str(snapshot.config["configurable"].get("checkpoint_id", ""))


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def state_table(snapshot: StateSnapshot, title: str = "state") -> Table:
    """The sections of one checkpoint: billing, account, policy, progress, reply."""
    values = snapshot.values
    table = Table(title=title, show_header=False, title_justify="left", expand=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    billing = values.get("billing")
    if billing:
        table.add_row(
            "billing",
            f"duplicate {_money(billing['duplicate_amount'])} "
            f"({', '.join(billing['transaction_ids']) or 'none'}), "
            f"refund eligible: {billing['refund_eligible']}",
        )
    account = values.get("account")
    if account:
        table.add_row(
            "account",
            f"issue found: {account['issue_found']}, reset sent: {account['reset_sent']}, "
            f"locked: {account['account_locked']}",
        )
    policy = values.get("policy")
    if policy:
        table.add_row(
            "policy",
            f"approved: {policy['approved']}, human review: "
            f"{policy['requires_human_review']} ({policy['reason']})",
        )
    table.add_row("completed", ", ".join(values.get("completed_steps", [])) or "-")
    table.add_row("next", ", ".join(snapshot.next) or "(done)")
    metadata = snapshot.metadata or {}
    table.add_row("checkpoint", f"step {metadata.get('step')}, "
                  f"id {short_id(_checkpoint_id(snapshot))}")  # fmt: skip
    if values.get("final_response"):
        table.add_row("reply", values["final_response"])
    return table


def interrupt_panel(snapshot: StateSnapshot) -> Panel:
    """The question a paused run is waiting on."""
    lines = []
    for task in snapshot.tasks:
        for interrupt in task.interrupts:
            value = interrupt.value
            if isinstance(value, Mapping):
                lines.append(f"[bold]{task.name}[/] asks: {value.get('question')}")
                lines.append(f"  refund: {_money(value.get('refund_amount'))}")
                lines.append(f"  transactions: {', '.join(value.get('transaction_ids', []))}")
                lines.append(f"  why: {'; '.join(value.get('reasons', []))}")
            else:
                lines.append(f"[bold]{task.name}[/] asks: {value!r}")
    return Panel("\n".join(lines) or "(no interrupt)", title="waiting for a human", expand=False)


def history_table(history: Iterable[StateSnapshot], title: str = "history") -> Table:
    """Every checkpoint of a thread, newest first, with its parent and what it holds."""
    table = Table(title=title, title_justify="left")
    for column in ("step", "source", "checkpoint", "parent", "next", "duplicate", "decision"):
        table.add_column(column, no_wrap=column != "next")
    for snapshot in history:
        parent = (
            snapshot.parent_config["configurable"]["checkpoint_id"]
            if (snapshot.parent_config)
            else None
        )
        billing = snapshot.values.get("billing") or {}
        policy = snapshot.values.get("policy")
        decision = "-" if not policy else ("approved" if policy["approved"] else "denied")
        metadata = snapshot.metadata or {}
        table.add_row(
            str(metadata.get("step")),
            str(metadata.get("source")),
            short_id(_checkpoint_id(snapshot)),
            short_id(parent),
            ", ".join(snapshot.next) or "-",
            _money(billing.get("duplicate_amount")) if billing else "-",
            decision,
        )
    return table


def counters_table(counts: Mapping[str, int], title: str = "node runs") -> Table:
    """How often each node's body ran (0 if never), in graph order."""
    table = Table(title=title, title_justify="left")
    for node in NODES:
        table.add_column(node, justify="right")
    table.add_row(*(str(counts.get(node, 0)) for node in NODES))
    return table


_WRITERS = {"__start__": "(graph input)", "__interrupt__": "(update_state)"}
"""LangGraph records the input under ``__start__`` and ``update_state`` writes under an
``__interrupt__`` task path, whatever ``as_node`` was."""


def audit_table(entries: Sequence[Any], title: str = "audit trail (PostgreSQL)") -> Table:
    """Who wrote which section at which step: ``AuditEntry`` rows, LangGraph's own
    trigger channels (``branch:to:*``) left out.

    An ``update_state`` that forks from an older checkpoint has no row here: LangGraph
    then stores its values in the new checkpoint, not as writes.
    """
    table = Table(title=title, title_justify="left")
    table.add_column("step", justify="right")
    table.add_column("node")
    table.add_column("channel")
    table.add_column("value", overflow="fold", max_width=70)
    hidden = 0
    for entry in entries:
        if entry.channel.startswith("branch:"):
            hidden += 1
            continue
        table.add_row(
            "-" if entry.step is None else str(entry.step),
            _WRITERS.get(entry.node or "", entry.node or "-"),
            entry.channel,
            entry.summary,
        )
    if hidden:
        table.caption = f"{hidden} graph trigger writes (branch:to:*) not shown"
    return table


def tiers_table(
    hot: Mapping[str, Any], durable: Mapping[str, int], stats: Any | None = None
) -> Group:
    """Where a thread lives: its Valkey keys (with TTLs), its PostgreSQL rows, and the
    outbox between them."""
    keys = Table(
        title=f"hot tier (Valkey/Redis): thread {hot.get('thread_id')}", title_justify="left"
    )
    keys.add_column("key", overflow="fold")
    keys.add_column("TTL", justify="right")
    for key, ttl_ms in hot.get("keys", {}).items():
        keys.add_row(_printable(key), _ttl(ttl_ms))
    keys.caption = f"{hot.get('checkpoints')} hot checkpoints, {hot.get('pending')} not yet durable"
    rows = Table(title="durable tier (PostgreSQL): rows of the thread", title_justify="left")
    for column in durable:
        rows.add_column(column, justify="right")
    rows.add_row(*(str(v) for v in durable.values()))
    parts: list[Any] = [keys, rows]
    if stats is not None:
        outbox = Table(title="the chain (saver.stats())", title_justify="left")
        outbox.add_column("stat")
        outbox.add_column("value", justify="right")
        fields = getattr(stats, "__dataclass_fields__", None) or {}
        for name in fields:
            value = getattr(stats, name)
            outbox.add_row(name, f"{value:.2f}" if isinstance(value, float) else str(value))
        parts.append(outbox)
    return Group(*parts)


def _printable(key: Any) -> str:
    """The key, with long segments (hashed thread ids) cut to 8 characters."""
    text = key.decode(errors="backslashreplace") if isinstance(key, bytes) else str(key)
    return ":".join(part if len(part) <= 16 else part[:8] + "\u2026" for part in text.split(":"))


def _ttl(ttl_ms: int) -> str:
    if ttl_ms == -1:
        return "no expiry"
    if ttl_ms == -2:
        return "missing"
    return f"{ttl_ms / 1000:,.0f} s"
