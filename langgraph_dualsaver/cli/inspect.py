"""Commands that look inside threads: ``threads``, ``history``, ``show``, ``diff``, ``audit``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

import typer

from langgraph_dualsaver.cli import render
from langgraph_dualsaver.cli.data import list_threads, thread_presence
from langgraph_dualsaver.cli.session import (
    CliError,
    Target,
    handle_errors,
    open_saver,
    run,
    target_of,
    thread_arg,
)
from langgraph_dualsaver.cli.views import (
    diff_values,
    history_rows,
    history_tree,
    is_trigger_channel,
    next_nodes,
    nodes_by_checkpoint,
    parse_filter,
    state_values,
)

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import CheckpointTuple

    from langgraph_dualsaver.chain.saver import DualSaver
    from langgraph_dualsaver.cli.views import HistoryRow

__all__ = ["audit", "diff", "history", "not_found", "show", "threads"]

ThreadId = Annotated[str, typer.Argument(help="The thread_id.", show_default=False)]
Namespace = Annotated[
    str, typer.Option("--ns", help="Checkpoint namespace (subgraphs); the root by default.")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AllChannels = Annotated[
    bool,
    typer.Option("--all", help="Include trigger channels (branch:to:*, __start__, ...)."),
]


async def not_found(
    saver: DualSaver,
    target: Target,
    thread_id: str,
    checkpoint_id: str | None = None,
    ns: str = "",
) -> CliError:
    """The error for a thread, or a checkpoint of it, that neither tier holds."""
    presence = await thread_presence(saver, thread_id)
    if not presence["hot"] and not presence["durable"]:
        return CliError(
            f"no thread {thread_id!r} in Redis (prefix {target.prefix!r}) or PostgreSQL; "
            "`dualsaver threads` lists the threads there are"
        )
    if checkpoint_id is not None:
        return CliError(
            f"thread {thread_id!r} has no checkpoint {checkpoint_id!r}"
            f"{f' in namespace {ns!r}' if ns else ''}; "
            f"`dualsaver history {thread_id}` lists its checkpoints"
        )
    return CliError(f"thread {thread_id!r} has no checkpoint in namespace {ns!r}")


MIN_SUFFIX = 6
"""Shortest checkpoint id suffix ``show`` and ``diff`` accept (tables print 12)."""


async def find_checkpoint(
    saver: DualSaver, target: Target, thread_id: str, ns: str, checkpoint_id: str | None
) -> CheckpointTuple:
    """The checkpoint with this id, or else the one id ending with it (like a short git
    hash: ``history`` prints the last 12 characters); the latest when ``None``."""
    found = await saver.aget_tuple(_config(thread_id, ns, checkpoint_id))
    if found is not None:
        return found
    suffix = (checkpoint_id or "").lstrip("\u2026.")
    if checkpoint_id is not None and len(suffix) >= MIN_SUFFIX:
        matches = [
            _checkpoint_id(item)
            async for item in saver.alist(_config(thread_id, ns))
            if _checkpoint_id(item).endswith(suffix)
        ]
        if len(matches) > 1:
            raise CliError(
                f"checkpoint {checkpoint_id!r} is ambiguous in thread {thread_id!r}: "
                f"{', '.join(matches)}"
            )
        if matches:
            found = await saver.aget_tuple(_config(thread_id, ns, matches[0]))
            if found is not None:
                return found
    raise await not_found(saver, target, thread_id, checkpoint_id, ns)


def _config(thread_id: str, ns: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _checkpoint_id(item: CheckpointTuple) -> str:
    checkpoint_id: str = item.config["configurable"]["checkpoint_id"]
    return checkpoint_id


# -- threads ----------------------------------------------------------------------------


@handle_errors
def threads(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="Most threads to list.")] = 20,
    filter: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            "-f",
            help="key=value that the latest checkpoint's metadata must hold; repeatable. "
            "A value is JSON if it parses as JSON (step=3 is a number).",
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """List threads, newest first: latest step, time, and tier.

    Tier: hot (Redis only, not yet flushed), durable (PostgreSQL only: expired
    from Redis or never read back) or both.

    Example: dualsaver threads --limit 5 --filter source=loop
    """
    try:
        metadata_filter = parse_filter(filter or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--filter") from exc
    target = target_of(ctx)

    async def go() -> list[Any]:
        async with open_saver(target) as saver:
            return await list_threads(saver, limit=limit, filter=metadata_filter)

    rows = run(go)
    if as_json:
        render.print_json([dataclasses.asdict(row) for row in rows])
    elif not rows:
        typer.echo("no threads")
    else:
        render.console().print(render.threads_table(rows))


# -- history ----------------------------------------------------------------------------


@handle_errors
def history(
    ctx: typer.Context,
    thread_id: ThreadId,
    ns: Namespace = "",
    limit: Annotated[
        int | None, typer.Option(min=1, help="Show only the newest N checkpoints.")
    ] = None,
    tree: Annotated[
        bool,
        typer.Option(
            "--tree",
            help="Draw the checkpoints as a tree, oldest first: each branch under its "
            "fork point, update_state checkpoints and the latest one marked.",
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """The checkpoint chain of a thread, newest first.

    Each checkpoint with its step, source (input, loop, update, fork), the node(s)
    whose run produced it (from versions_seen, else from the writes on its parent),
    its parent, and fork points: a checkpoint with more than one child. Ids are
    shortened to their last 12 characters, which show and diff accept (--json has
    them whole). --tree draws the same checkpoints as a tree, oldest first.

    Example: dualsaver history case_8842-1a2b3c4d --tree
    """
    if tree and as_json:
        raise CliError("--tree draws text; --json gives each checkpoint's parent_id instead")
    thread_id = thread_arg(thread_id)
    ns = thread_arg(ns, "checkpoint_ns") if ns else ""
    target = target_of(ctx)

    async def go() -> tuple[list[CheckpointTuple], list[Any]]:
        async with open_saver(target) as saver:
            items = [item async for item in saver.alist(_config(thread_id, ns))]
            if not items:
                raise await not_found(saver, target, thread_id, ns=ns)
            return items, await saver.durable.aaudit(thread_id)

    items, trail = run(go)
    writers = nodes_by_checkpoint(e for e in trail if e.checkpoint_ns == ns)
    rows = history_rows(items, writers)[:limit]
    if as_json:
        render.print_json([{**dataclasses.asdict(row), "is_fork": row.is_fork} for row in rows])
        return
    where = f"history of {thread_id}" + (f" (namespace {ns!r})" if ns else "")
    if tree:
        _print_tree(rows, where)
        return
    title = f"{where}, newest first (times in UTC)"
    render.console().print(render.history_table(rows, title))
    forks = sum(row.is_fork for row in rows)
    if forks:
        typer.echo(f"{forks} fork point(s): a checkpoint with more than one child")


def _print_tree(rows: list[HistoryRow], where: str) -> None:
    title = f"{where} as a tree, oldest first (times in UTC)"
    render.console().print(render.history_tree_table(history_tree(rows), title))
    typer.echo(render.TREE_LEGEND)


# -- show -------------------------------------------------------------------------------


@handle_errors
def show(
    ctx: typer.Context,
    thread_id: ThreadId,
    checkpoint: Annotated[
        str | None,
        typer.Option("--checkpoint", "-c", help="A checkpoint id; the latest by default."),
    ] = None,
    ns: Namespace = "",
    all_channels: AllChannels = False,
    as_json: Json = False,
) -> None:
    """The state at a checkpoint: channel values, pending writes, next nodes.

    Next nodes are computed without the graph, as LangGraph does: a node runs next
    when its trigger channel (branch:to:NODE, join:...:NODE, or __start__ for
    input) holds a value with a version the node has not seen in versions_seen;
    Send packets in __pregel_tasks add their nodes. A pending __interrupt__ write
    with no __resume__ means the thread waits for Command(resume=...).

    A checkpoint may be given by the end of its id, as history prints it.

    Example: dualsaver show case_8842-1a2b3c4d --checkpoint 5bcddea7 --json
    """
    thread_id = thread_arg(thread_id)
    checkpoint = thread_arg(checkpoint, "checkpoint_id") if checkpoint is not None else None
    ns = thread_arg(ns, "checkpoint_ns") if ns else ""
    target = target_of(ctx)

    async def go() -> dict[str, Any]:
        async with open_saver(target) as saver:
            found = await find_checkpoint(saver, target, thread_id, ns, checkpoint)
            exact = _config(thread_id, ns, _checkpoint_id(found))
            stored = []
            if await saver.hot.aget_tuple(exact) is not None:
                stored.append("redis")
            if await saver.durable.aget_tuple(exact) is not None:
                stored.append("postgresql")
            trail = await saver.durable.aaudit(thread_id)
        nodes = {
            e.task_id: e.node
            for e in trail
            if e.checkpoint_id == _checkpoint_id(found) and e.checkpoint_ns == ns
        }
        return _state_view(found, stored, nodes, all_channels)

    view = run(go)
    if as_json:
        render.print_json(view)
        return
    out = render.console()
    header = [
        ("thread", view["thread_id"]),
        ("checkpoint", view["checkpoint_id"]),
        ("namespace", repr(view["checkpoint_ns"])),
        ("step", view["step"]),
        ("source", view["source"]),
        ("time (UTC)", render.when(view["created_at"])),
        ("parent", view["parent_checkpoint_id"] or "-"),
        ("stored in", " + ".join(view["stored_in"]) or "-"),
        ("next", ", ".join(view["next"]) or "(nothing: the run is done)"),
    ]
    if view["interrupted"]:
        header.append(("waiting", "an interrupt: resume with Command(resume=...)"))
    out.print(render.kv_table(header))
    out.print(render.values_table(view["values"], "values"))
    if view["pending_writes"]:
        out.print(render.writes_table(view["pending_writes"], "pending writes"))
    else:
        out.print("no pending writes")


def _state_view(
    found: CheckpointTuple, stored: list[str], nodes: dict[str, str | None], internal: bool
) -> dict[str, Any]:
    checkpoint = found.checkpoint
    metadata = found.metadata or {}
    upcoming = next_nodes(checkpoint)
    channels = {w[1] for w in found.pending_writes or []}
    parent = (found.parent_config or {}).get("configurable", {}).get("checkpoint_id")
    return {
        "thread_id": found.config["configurable"]["thread_id"],
        "checkpoint_ns": found.config["configurable"].get("checkpoint_ns", ""),
        "checkpoint_id": _checkpoint_id(found),
        "parent_checkpoint_id": parent,
        "step": metadata.get("step"),
        "source": metadata.get("source"),
        "created_at": checkpoint.get("ts"),
        "stored_in": stored,
        "metadata": metadata,
        "values": state_values(checkpoint.get("channel_values") or {}, internal=internal),
        "pending_writes": [
            {"task_id": task_id, "node": nodes.get(task_id), "channel": channel, "value": value}
            for task_id, channel, value in found.pending_writes or []
        ],
        "next": list(upcoming.nodes),
        "next_triggers": list(upcoming.triggers),
        "interrupted": "__interrupt__" in channels and "__resume__" not in channels,
    }


# -- diff -------------------------------------------------------------------------------


@handle_errors
def diff(
    ctx: typer.Context,
    thread_id: ThreadId,
    a: Annotated[str, typer.Argument(help="The checkpoint id to compare from.")],
    b: Annotated[str, typer.Argument(help="The checkpoint id to compare to.")],
    ns: Namespace = "",
    all_channels: AllChannels = False,
    as_json: Json = False,
) -> None:
    """What changed from checkpoint A to checkpoint B, channel by channel.

    Lists grown by a reducer show the items added; dicts show the keys that changed.
    Checkpoints may be given by the end of their ids, as history prints them.

    Example: dualsaver diff case_8842-1a2b3c4d 5bcddea7 2616ba50
    """
    thread_id = thread_arg(thread_id)
    a, b = thread_arg(a, "checkpoint_id"), thread_arg(b, "checkpoint_id")
    ns = thread_arg(ns, "checkpoint_ns") if ns else ""
    target = target_of(ctx)

    async def go() -> tuple[CheckpointTuple, CheckpointTuple]:
        async with open_saver(target) as saver:
            found = []
            for checkpoint_id in (a, b):
                found.append(await find_checkpoint(saver, target, thread_id, ns, checkpoint_id))
            return found[0], found[1]

    first, second = run(go)
    changes = diff_values(
        first.checkpoint.get("channel_values") or {},
        second.checkpoint.get("channel_values") or {},
        internal=all_channels,
    )
    shown = [c for c in changes if c.status != "unchanged"]
    unchanged = [c.channel for c in changes if c.status == "unchanged"]
    if as_json:
        render.print_json(
            {
                "thread_id": thread_id,
                "from": _checkpoint_id(first),
                "to": _checkpoint_id(second),
                "changes": [dataclasses.asdict(c) for c in shown],
                "unchanged": unchanged,
            }
        )
        return
    steps = f"step {first.metadata.get('step')} -> {second.metadata.get('step')}"
    ends = f"{render.short_id(_checkpoint_id(first))} -> {render.short_id(_checkpoint_id(second))}"
    title = f"{thread_id}: {ends} ({steps})"
    if shown:
        render.console().print(render.diff_table(shown, title))
    else:
        typer.echo(f"{title}: no channel changed")
    if unchanged:
        typer.echo(f"unchanged: {', '.join(unchanged)}")


# -- audit ------------------------------------------------------------------------------


@handle_errors
def audit(
    ctx: typer.Context,
    thread_id: ThreadId,
    all_channels: Annotated[
        bool, typer.Option("--all", help="Include writes to trigger channels (branch:to:*).")
    ] = False,
    as_json: Json = False,
) -> None:
    """Who (node) wrote what (channel, value) at which step, oldest first.

    Read from PostgreSQL, which keeps every pending write, after flushing the outbox
    so the latest writes are there. A human's answer to an interrupt is the
    __resume__ write of "(human)"; the node that asked records it too.

    Example: dualsaver audit case_8842-1a2b3c4d --json
    """
    thread_id = thread_arg(thread_id)
    target = target_of(ctx)

    async def go() -> list[Any]:
        async with open_saver(target) as saver:
            presence = await thread_presence(saver, thread_id)
            if not presence["hot"] and not presence["durable"]:
                raise await not_found(saver, target, thread_id)
            return await saver.aaudit(thread_id)

    entries = [e for e in run(go) if all_channels or not is_trigger_channel(e.channel)]
    if as_json:
        render.print_json([dataclasses.asdict(e) for e in entries])
        return
    title = f"audit trail of {thread_id}, oldest first (PostgreSQL; times in UTC)"
    render.console().print(render.audit_table(entries, title))
