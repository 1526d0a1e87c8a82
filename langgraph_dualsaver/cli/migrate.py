"""``dualsaver migrate``: what a state-schema upgrade does to threads, and storing it.

Reading already upgrades an older checkpoint (``DualSaver(state_schema=...)``) without
changing what is stored; this command shows that upgrade (``--dry-run``) or stores the
upgraded latest checkpoint as a new one (``--write``, source ``"update"``), so the thread
no longer needs the upgrade on read and older code can see what newer code will.
"""

from __future__ import annotations

import importlib
import sys
from datetime import datetime, timezone
from typing import Annotated, Any

import typer
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.base.id import uuid6

from langgraph_dualsaver.cli.session import (
    CliError,
    handle_errors,
    open_saver,
    run,
    target_of,
    thread_arg,
)
from langgraph_dualsaver.state_upgrades import (
    UPGRADED_FROM_KEY,
    StateSchema,
    is_state_channel,
    stored_version,
    upgrade_tuple,
)

__all__ = ["describe_changes", "load_schema", "migrate"]


def load_schema(path: str) -> StateSchema:
    """The ``StateSchema`` at ``module:NAME`` (imported from the current directory too)."""
    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise CliError(f"--state-schema must be module:NAME, got {path!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r} for --state-schema: {exc}") from exc
    found = getattr(module, name, None)
    if not isinstance(found, StateSchema):
        raise CliError(
            f"{path} is {type(found).__name__ if found is not None else 'missing'}, "
            "not a StateSchema"
        )
    return found


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What an upgrade changed in the state channels, one line per change."""
    lines: list[str] = []
    for channel in sorted(set(before) | set(after)):
        if not is_state_channel(channel):
            continue
        old, new = before.get(channel), after.get(channel)
        if channel not in after:
            lines.append(f"- {channel} (removed)")
        elif channel not in before:
            lines.append(f"+ {channel} = {_short(new)}")
        elif isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new), key=str):
                if key not in new:
                    lines.append(f"- {channel}.{key}")
                elif key not in old:
                    lines.append(f"+ {channel}.{key} = {_short(new[key])}")
                elif old[key] != new[key]:
                    lines.append(f"~ {channel}.{key}: {_short(old[key])} -> {_short(new[key])}")
        elif old != new:
            lines.append(f"~ {channel}: {_short(old)} -> {_short(new)}")
    return lines


async def _migrate_one(saver: Any, thread_id: str, schema: StateSchema, write: bool) -> list[str]:
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    found: CheckpointTuple | None = await saver.aget_tuple(config)
    if found is None:
        raise CliError(f"thread {thread_id!r} has no checkpoint in either tier")
    checkpoint_id = found.checkpoint["id"]
    stored = stored_version(found.metadata, schema)
    head = f"thread {thread_id}: checkpoint …{checkpoint_id[-12:]}"
    if stored == schema.version:
        return [f"{head} is at state schema version {stored} already: nothing to do"]
    upgraded = upgrade_tuple(found, schema)  # raises for a newer stamp or a gap
    lines = [f"{head} (step {found.metadata.get('step')}): version {stored} -> {schema.version}"]
    changes = describe_changes(
        found.checkpoint.get("channel_values") or {}, upgraded.checkpoint["channel_values"]
    )
    lines += [f"  {change}" for change in changes] or ["  (no value changed)"]
    state_writes = [w for w in found.pending_writes or [] if is_state_channel(w[1])]
    if found.pending_writes:
        lines.append(
            f"  pending writes: {len(found.pending_writes)}, {len(state_writes)} to state "
            "channels (upgraded on read; the copy has none, so paused tasks run again)"
        )
    if write:
        step = int(found.metadata.get("step", -1)) + 1
        copy = {
            **upgraded.checkpoint,
            "id": str(uuid6(clock_seq=step)),
            "ts": datetime.now(timezone.utc).isoformat(),
        }
        metadata = {"source": "update", "step": step, "parents": {}, UPGRADED_FROM_KEY: stored}
        saver.state_schema = schema  # the put stamps this version
        try:
            saved = await saver.aput(found.config, copy, metadata, {})
        finally:
            saver.state_schema = None
        lines.append(f"  written as checkpoint …{saved['configurable']['checkpoint_id'][-12:]}")
    return lines


@handle_errors
def migrate(
    ctx: typer.Context,
    thread_ids: Annotated[list[str], typer.Argument(help="The threads to upgrade.")],
    state_schema: Annotated[
        str,
        typer.Option(
            "--state-schema",
            help="The StateSchema the upgrades come from, as module:NAME.",
            show_default=False,
        ),
    ],
    write: Annotated[
        bool,
        typer.Option(
            "--write/--dry-run",
            help="Store the upgraded latest checkpoint as a new one (source 'update'), or "
            "only show what the upgrade changes (the default).",
        ),
    ] = False,
) -> None:
    """Upgrade threads' latest checkpoints to a StateSchema's version.

    --dry-run (the default) shows what the upgrade changes; --write stores the upgraded
    copy as the thread's new latest checkpoint. Older checkpoints are never rewritten.
    A checkpoint newer than the schema, or one with no chain of upgrades to it, is
    refused.

    Example: dualsaver migrate case_8842-1a2b3c4d --state-schema myapp.state:SCHEMA --write
    """
    schema = load_schema(state_schema)
    ids = [thread_arg(t) for t in thread_ids]
    target = target_of(ctx)

    async def go() -> list[str]:
        async with open_saver(target) as saver:
            saver.state_schema = None  # read what is stored; upgraded here
            lines: list[str] = []
            for thread_id in ids:
                lines += await _migrate_one(saver, thread_id, schema, write)
            if write:
                await saver.aflush()
            return lines

    for line in run(go):
        typer.echo(line)
    if not write:
        typer.echo("dry run: nothing written (--write stores the upgraded copies)")
