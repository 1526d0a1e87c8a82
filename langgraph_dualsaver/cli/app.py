"""The ``dualsaver`` typer app: global options, then one command per job."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from langgraph_dualsaver.cli import deadletters, gc, inspect, migrate, ops
from langgraph_dualsaver.cli.session import DEFAULT_TIMEOUT_S, Target, env_mode
from langgraph_dualsaver.durable.sql import schema_name
from langgraph_dualsaver.errors import ConfigurationError

__all__ = ["app"]

app = typer.Typer(
    name="dualsaver",
    help="Look inside LangGraph threads kept by DualSaver (Redis + PostgreSQL), audit "
    "them, flush the outbox, check the stores.\n\n"
    "Connects like DualSaver.from_env(): --redis-url / --postgres-url / --prefix / "
    "--schema (given before the command), else DUALSAVER_REDIS_URL / "
    "DUALSAVER_POSTGRES_URL / DUALSAVER_PREFIX / DUALSAVER_SCHEMA, else the embedded "
    "servers that `dualsaver up` runs.\n\n"
    "Exit codes: 0 done, 1 error, 2 usage.\n\n"
    "Example: dualsaver --prefix myapp threads",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _checked_schema(value: str | None) -> str | None:
    """``--schema`` as the savers check it; a bad name is a usage error (exit 2)."""
    if not value:
        return None
    try:
        return schema_name(value)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.callback()
def configure(
    ctx: typer.Context,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar="DUALSAVER_REDIS_URL",
            help="Redis or Valkey URL.",
            show_default=False,
        ),
    ] = None,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            "--postgres-url",
            envvar="DUALSAVER_POSTGRES_URL",
            help="PostgreSQL URL.",
            show_default=False,
        ),
    ] = None,
    prefix: Annotated[
        str, typer.Option("--prefix", envvar="DUALSAVER_PREFIX", help="Redis key prefix.")
    ] = "dualsaver",
    schema: Annotated[
        str | None,
        typer.Option(
            "--schema",
            envvar="DUALSAVER_SCHEMA",
            help="PostgreSQL schema of the app (default: where search_path finds the tables).",
            show_default=False,
            callback=_checked_schema,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            envvar="DUALSAVER_TIMEOUT",
            min=0.1,
            help="Seconds to wait for a store to connect or answer.",
        ),
    ] = DEFAULT_TIMEOUT_S,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log what the savers do (INFO).")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = Target(
        redis_url or None, postgres_url or None, prefix, env_mode(), timeout, schema or None
    )


app.command("up")(ops.up)
app.command("setup")(ops.setup)
app.command("status")(ops.status)
app.command("threads")(inspect.threads)
app.command("history")(inspect.history)
app.command("show")(inspect.show)
app.command("diff")(inspect.diff)
app.command("audit")(inspect.audit)
app.command("flush")(ops.flush)
app.command("prune")(ops.prune)
app.command("delete")(ops.delete)
app.command("migrate")(migrate.migrate)
app.command("gc")(gc.gc)
app.add_typer(deadletters.app, name="deadletters")
