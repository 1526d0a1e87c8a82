"""The retention options (``prune --idle 30d --keep-last 50 --max-age 7d``, and the same
on ``flush --follow``) and how a retention report reads."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from langgraph_dualsaver.errors import ConfigurationError
from langgraph_dualsaver.retention import Retention, parse_duration

if TYPE_CHECKING:
    from langgraph_dualsaver.chain.saver import DualSaver
    from langgraph_dualsaver.durable.retention import RetentionReport, Sweeper

__all__ = [
    "DeleteWaiting",
    "Idle",
    "IdleAction",
    "KeepLast",
    "MaxAge",
    "describe_report",
    "duration_option",
    "policy_from",
    "sweeper",
]

Idle = Annotated[
    str | None,
    typer.Option(
        "--idle",
        show_default=False,
        help="A thread whose newest checkpoint is older than this (30d, 12h, 90m, 2w) is "
        "idle: see --idle-action.",
    ),
]
IdleAction = Annotated[
    str,
    typer.Option(
        "--idle-action",
        help="What happens to an idle thread: keep_latest (its latest checkpoint stays) or "
        "delete (the whole thread; one waiting at an interrupt only with --delete-waiting).",
    ),
]
KeepLast = Annotated[
    int | None,
    typer.Option(
        "--keep-last",
        min=1,
        show_default=False,
        help="Keep at most this many newest checkpoints per thread and namespace.",
    ),
]
MaxAge = Annotated[
    str | None,
    typer.Option(
        "--max-age",
        show_default=False,
        help="Remove checkpoints older than this (never a thread's latest).",
    ),
]
DeleteWaiting = Annotated[
    bool,
    typer.Option(
        "--delete-waiting",
        help="Let --idle-action delete remove threads waiting at an interrupt too.",
    ),
]


def duration_option(value: str, hint: str) -> timedelta:
    """A duration option's value; a usage error (exit 2) if it is not one."""
    found = _duration(value, hint)
    assert found is not None
    return found


def sweeper(saver: DualSaver, policy: Retention) -> Sweeper:
    """A flush worker's retention, in step with the saver's hot tier and outbox."""
    from langgraph_dualsaver.chain.retention import ChainHotSide
    from langgraph_dualsaver.durable.retention import Sweeper

    side = ChainHotSide(saver.hot, saver.durable, saver.flusher.outbox)
    return Sweeper(saver.durable, policy, side)


def _duration(value: str | None, hint: str) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None


def policy_from(
    idle: str | None,
    idle_action: str,
    keep_last: int | None,
    max_age: str | None,
    delete_waiting: bool,
    interval: timedelta | None = None,
) -> Retention:
    """The ``Retention`` the options describe; a usage error (exit 2) if they do not."""
    try:
        policy = Retention(
            idle=_duration(idle, "--idle"),
            idle_action=idle_action,  # type: ignore[arg-type]  # Retention checks it
            keep_last=keep_last,
            max_age=_duration(max_age, "--max-age"),
            delete_waiting=delete_waiting,
        )
        return policy if interval is None else replace(policy, interval=interval)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from None


def describe_report(report: RetentionReport) -> list[str]:
    """A report as lines of text: one per thread it touched, then a summary."""
    lines = []
    would = report.dry_run
    for outcome in report.outcomes:
        n = outcome.checkpoints
        if outcome.action == "delete":
            verb = "would delete" if would else "deleted"
            lines.append(f"{verb} thread {outcome.thread_id!r} ({n} checkpoints): {outcome.reason}")
        elif not outcome.done and not would:
            lines.append(f"left thread {outcome.thread_id!r}: {outcome.reason}")
        else:
            verb = "would remove" if would else "removed"
            lines.append(
                f"{verb} {n} checkpoints of thread {outcome.thread_id!r}: {outcome.reason}"
            )
    threads = sum(1 for o in report.outcomes if o.action == "delete" and (o.done or would))
    checkpoints = sum(o.checkpoints for o in report.outcomes if o.done or would)
    if would:
        lines.append(
            f"dry run: {report.threads_seen} threads looked at; {threads} would be deleted "
            f"and {checkpoints} checkpoints removed; nothing was changed"
        )
    else:
        lines.append(
            f"{report.threads_seen} threads looked at; {threads} deleted, {checkpoints} "
            f"checkpoints removed in {len(report.transactions)} transactions"
        )
    return lines
