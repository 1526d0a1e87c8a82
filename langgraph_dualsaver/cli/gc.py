"""``dualsaver gc``: collect the offload store's objects that no record references."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import typer

from langgraph_dualsaver.cli import render
from langgraph_dualsaver.cli.session import CliError, handle_errors, open_session, run, target_of
from langgraph_dualsaver.offload.gc import GcReport, collect

__all__ = ["gc", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd])")


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` (or ``"0"``)."""
    if text.strip() == "0":
        return timedelta(0)
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise typer.BadParameter(
            f"{text!r} is not a duration: a whole number and s, m, h or d (1h, 30m, 7d)",
            param_hint="--grace",
        )
    return timedelta(seconds=int(found.group(1)) * _UNITS[found.group(2)])


@handle_errors
def gc(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    grace: Annotated[
        str,
        typer.Option(
            "--grace",
            help="Keep unreferenced objects younger than this (a put may be about to "
            "reference them): 1h, 30m, 7d.",
        ),
    ] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Delete the offloaded objects nothing references any more (DUALSAVER_OFFLOAD_URL).

    References in PostgreSQL, in the Redis threads and in records still queued in the
    outbox keep an object; so does being younger than --grace or than the oldest queued
    record. Run it after delete, prune or retention, or on a schedule.

    Example: dualsaver gc --dry-run --grace 1h
    """
    keep = parse_duration(grace)
    target = target_of(ctx)

    async def go() -> GcReport:
        async with open_session(target) as session:
            if session.saver.offload is None:
                raise CliError("no offload store: set DUALSAVER_OFFLOAD_URL")
            return await collect(session.saver, grace=keep, dry_run=dry_run)

    report = run(go)
    if as_json:
        render.print_json(report.as_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{report.store}: {report.objects} objects ({report.bytes:,} bytes), "
        f"{report.marked} referenced; {verb} {report.swept} ({report.swept_bytes:,} bytes"
        f", {report.leftovers} half-written); kept {report.kept_young} younger than "
        f"{report.cutoff.isoformat(timespec='seconds')}"
    )
