"""``dualsaver deadletters``: list, replay and purge the outbox entries the flusher gave up
on (undecodable, unauthenticated, or refused by PostgreSQL too often).

A dead letter is addressed as ``deadletters list`` prints it: ``<shard>:<stream id>``.
A bare stream id works too when one shard has it (letters dead-lettered together in
several shards share stream ids), or with ``--shard``.
``--all`` acts on the dead letters there were when the command started, never on ones
dead-lettered while it runs (a replayed entry that fails again stays for next time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from langgraph_dualsaver.chain.deadletters import DEAD_LETTER_CAP, DeadLetter, DeadLetters, near_cap
from langgraph_dualsaver.cli import render
from langgraph_dualsaver.cli.session import (
    CliError,
    Target,
    handle_errors,
    open_saver,
    run,
    target_of,
)

if TYPE_CHECKING:
    from langgraph_dualsaver.chain.saver import DualSaver

__all__ = ["app", "cap_warnings"]

app = typer.Typer(
    name="deadletters",
    help="List, replay or purge dead letters: outbox entries the flusher gave up on. "
    "They are not in PostgreSQL.\n\n"
    "Example: dualsaver deadletters list",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
LetterId = Annotated[
    str | None,
    typer.Argument(
        metavar="ID",
        help="A dead letter, as `deadletters list` prints it (<shard>:<stream id>).",
        show_default=False,
    ),
]
All = Annotated[bool, typer.Option("--all", help="Every dead letter (instead of one ID).")]
Shard = Annotated[
    int | None,
    typer.Option("--shard", min=0, help="The shard of ID, if ID is a bare stream id."),
]


# -- list -------------------------------------------------------------------------------


@app.command("list")
@handle_errors
def list_letters(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="Most dead letters to list.")] = 100,
    as_json: Json = False,
) -> None:
    """List dead letters, newest first: id (<shard>:<stream id>), kind, thread, reason,
    time, size.

    Example: dualsaver deadletters list --json
    """
    target = target_of(ctx)

    async def go() -> tuple[list[DeadLetter], int]:
        async with open_saver(target) as saver:
            letters = DeadLetters(saver.hot)
            return await letters.newest(limit), sum((await letters.counts()).values())

    shown, total = run(go)
    if as_json:
        render.print_json([letter.as_dict() for letter in shown])
        return
    if not shown:
        typer.echo(f"no dead letters (prefix {target.prefix!r})")
        return
    render.console().print(_table(shown))
    typer.echo(
        f"{len(shown)} of {total} dead letters (cap {DEAD_LETTER_CAP:,} per shard); "
        "`dualsaver deadletters replay ID` puts one back on the outbox after a fix"
    )


def _table(letters: list[DeadLetter]) -> Table:
    table = Table(
        title="dead letters, newest first (times in UTC)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for name, options in (
        ("id", {"no_wrap": True}),
        ("kind", {}),
        ("thread", {"overflow": "fold"}),
        ("reason", {"overflow": "fold"}),
        ("time", {"no_wrap": True}),
        ("size", {"justify": "right"}),
    ):
        table.add_column(name, **options)
    for letter in letters:
        table.add_row(
            letter.ref,
            letter.kind,
            letter.thread_id or "-",
            letter.reason,
            render.when(letter.at),
            str(letter.size),
        )
    return table


# -- replay -----------------------------------------------------------------------------


@app.command("replay")
@handle_errors
def replay(
    ctx: typer.Context,
    letter_id: LetterId = None,
    every: All = False,
    shard: Shard = None,
    as_json: Json = False,
) -> None:
    """Put dead letters back on their outbox, fields unchanged, once the cause is fixed
    (one ID, or --all); a flusher then writes them to PostgreSQL or dead-letters them
    again. Thread deletions are never replayed (they would delete what the thread wrote
    since); purge them instead.

    Example: dualsaver deadletters replay 3:1733150000000-0
    """
    _one_or_all(letter_id, every)
    target = target_of(ctx)
    if every:
        result = run(lambda: _replay_all(target))
    else:
        assert letter_id is not None
        result = run(lambda: _replay_one(target, letter_id, shard))
    if as_json:
        render.print_json(result)
        return
    for row in result["replayed"]:
        typer.echo(f"replayed dead letter {row['id']} as outbox entry {row['entry_id']}")
    for row in result["kept"]:
        typer.echo(f"kept dead letter {row['id']}: {row['why']}")
    typer.echo(
        f"{len(result['replayed'])} replayed, {len(result['kept'])} kept; a flusher (or "
        "`dualsaver flush`) writes them to PostgreSQL"
    )


async def _replay_one(target: Target, letter_id: str, shard: int | None) -> dict[str, Any]:
    async with open_saver(target) as saver:
        letters = DeadLetters(saver.hot)
        letter = await _one(letters, target, letter_id, shard)
        (new_id,) = await letters.replay([letter])
    if new_id is None:
        raise CliError(f"dead letter {letter.ref} is gone: replayed or purged meanwhile")
    return {"replayed": [_row(letter, entry_id=new_id)], "kept": []}


async def _replay_all(target: Target) -> dict[str, Any]:
    async with open_saver(target) as saver:
        letters = DeadLetters(saver.hot)
        replayed, kept = await letters.replay_all(await letters.marks())
    return {
        "replayed": [_row(letter, entry_id=new_id) for letter, new_id in replayed],
        "kept": [_row(letter, why=why) for letter, why in kept],
    }


def _row(letter: DeadLetter, **extra: str) -> dict[str, Any]:
    return {"id": letter.ref, "shard": letter.shard, "thread_id": letter.thread_id, **extra}


# -- purge ------------------------------------------------------------------------------


@app.command("purge")
@handle_errors
def purge(
    ctx: typer.Context,
    letter_id: LetterId = None,
    every: All = False,
    shard: Shard = None,
    yes: Yes = False,
    as_json: Json = False,
) -> None:
    """Delete dead letters for good (one ID, or --all). Their entries are not in
    PostgreSQL: what they held is lost. Asks for confirmation unless --yes.

    Example: dualsaver deadletters purge --all --yes
    """
    _one_or_all(letter_id, every)
    target = target_of(ctx)
    marks: dict[int, str] | None = None
    letter: DeadLetter | None = None
    if every:
        marks, total = run(lambda: _marks(target))
        question = f"Purge all {total} dead letters of prefix {target.prefix!r}?"
    else:
        assert letter_id is not None
        letter = run(lambda: _find_one(target, letter_id, shard))
        question = (
            f"Purge dead letter {letter.ref} ({letter.kind} of thread {letter.thread_id or '?'})?"
        )
    if not yes:
        typer.confirm(f"{question} What is purged is not in PostgreSQL: it is lost", abort=True)
    purged = run(lambda: _purge(target, marks, letter))
    if as_json:
        render.print_json({"purged": purged})
    else:
        typer.echo(f"purged {purged} dead letters")


async def _marks(target: Target) -> tuple[dict[int, str], int]:
    async with open_saver(target) as saver:
        letters = DeadLetters(saver.hot)
        marks = await letters.marks()
        return marks, sum((await letters.counts()).values())


async def _find_one(target: Target, letter_id: str, shard: int | None) -> DeadLetter:
    async with open_saver(target) as saver:
        return await _one(DeadLetters(saver.hot), target, letter_id, shard)


async def _purge(target: Target, marks: dict[int, str] | None, letter: DeadLetter | None) -> int:
    async with open_saver(target) as saver:
        letters = DeadLetters(saver.hot)
        if marks is not None:
            return await letters.purge_all(marks)
        assert letter is not None
        purged = await letters.purge([letter])
    if not purged:
        raise CliError(f"dead letter {letter.ref} is gone: replayed or purged meanwhile")
    return purged


# -- shared -----------------------------------------------------------------------------


def _one_or_all(letter_id: str | None, every: bool) -> None:
    if (letter_id is None) == (not every):
        raise typer.BadParameter("give exactly one of ID or --all", param_hint="ID/--all")


async def _one(
    letters: DeadLetters, target: Target, letter_id: str, shard: int | None
) -> DeadLetter:
    found = await letters.find(letter_id, shard)
    if not found:
        raise CliError(
            f"no dead letter {letter_id!r} (prefix {target.prefix!r}); "
            "`dualsaver deadletters list` lists them"
        )
    if len(found) > 1:
        shards = ", ".join(str(letter.shard) for letter in found)
        raise CliError(f"dead letter {letter_id!r} is in shards {shards}: give <shard>:{letter_id}")
    return found[0]


async def cap_warnings(saver: DualSaver) -> list[str]:
    """``dualsaver status``'s warnings about shards whose dead letters near the cap."""
    return near_cap(await DeadLetters(saver.hot).counts(), DEAD_LETTER_CAP)
