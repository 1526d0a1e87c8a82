"""Where the commands connect, and how failures become messages and exit codes.

The configuration is ``DualSaver.from_env()``'s: ``--redis-url`` / ``--postgres-url`` /
``--prefix`` / ``--schema``, else ``DUALSAVER_REDIS_URL`` / ``DUALSAVER_POSTGRES_URL`` /
``DUALSAVER_PREFIX`` / ``DUALSAVER_SCHEMA``, else the per-user embedded servers
(``dualsaver up`` runs them; if none runs, a command starts them for its own duration).

Exit codes: 0 done, 1 error (``CliError``: the message says what to do), 2 usage.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import typer

from langgraph_dualsaver.cli.probe import (
    PostgresFacts,
    RedisFacts,
    Unreachable,
    postgres_facts,
    redis_facts,
)
from langgraph_dualsaver.errors import DualSaverError
from langgraph_dualsaver.settings import Timeouts

if TYPE_CHECKING:
    from langgraph_dualsaver.chain.saver import DualSaver, Mode

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CliError",
    "Session",
    "Target",
    "env_mode",
    "handle_errors",
    "open_saver",
    "open_session",
    "probe_both",
    "resolve_urls",
    "run",
    "saver_for",
    "target_of",
    "thread_arg",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """A failure the user can act on: printed as ``error: <message>``, exit code 1."""


DEFAULT_TIMEOUT_S = 5.0
"""The CLI waits longer than the savers' 1 s / 2 s defaults: it runs on laptops and busy
hosts, and a closed port fails at once anyway (connection refused)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Which stores the commands use."""

    redis_url: str | None = None
    postgres_url: str | None = None
    prefix: str = "dualsaver"
    mode: Mode = "write_behind"
    timeout_s: float = DEFAULT_TIMEOUT_S
    schema: str | None = None
    """The app's PostgreSQL schema; ``None``: the tables where ``search_path`` finds them."""

    @property
    def timeouts(self) -> Timeouts:
        """Connect and command timeouts of the probes and the saver."""
        limit = timedelta(seconds=self.timeout_s)
        return Timeouts(connect=limit, command=limit)


def target_of(ctx: typer.Context) -> Target:
    target = ctx.find_root().obj
    return target if isinstance(target, Target) else Target()


def resolve_urls(target: Target) -> tuple[str, str]:
    """The two URLs, starting the embedded servers when one is not configured."""
    if target.redis_url and target.postgres_url:
        return target.redis_url, target.postgres_url
    from langgraph_dualsaver.embedded import EmbeddedServerError, default_data_dir, shared_servers

    try:
        servers = shared_servers()
    except (EmbeddedServerError, DualSaverError, OSError) as exc:
        raise CliError(
            f"no DUALSAVER_REDIS_URL / DUALSAVER_POSTGRES_URL set and the embedded servers "
            f"did not start: {exc}"
        ) from exc
    if servers.started:
        typer.echo(
            f"note: started the embedded servers in {default_data_dir()} for this command; "
            "`dualsaver up` keeps them running",
            err=True,
        )
    return target.redis_url or servers.redis_url, target.postgres_url or servers.postgres_url


async def probe_both(
    redis_url: str,
    postgres_url: str,
    timeouts: Timeouts | None = None,
    schema: str | None = None,
) -> tuple[RedisFacts | Unreachable, PostgresFacts | Unreachable]:
    """Both stores' facts, probed at once; an unreachable one comes back as its error."""
    found = await asyncio.gather(
        redis_facts(redis_url, timeouts),
        postgres_facts(postgres_url, timeouts, schema),
        return_exceptions=True,
    )
    for item in found:
        if isinstance(item, BaseException) and not isinstance(item, Unreachable):
            raise item
    return found[0], found[1]  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Session:
    """An open saver and what the probes found about its two servers."""

    saver: DualSaver
    redis: RedisFacts
    postgres: PostgresFacts


def saver_for(target: Target, redis_url: str, postgres_url: str) -> DualSaver:
    """The command's saver for ``target``: no background flusher (only ``dualsaver
    flush`` flushes, besides the flush ``audit`` and ``prune`` do first); offloading to
    ``DUALSAVER_OFFLOAD_URL``, or beside the embedded servers' data when they are used,
    as ``DualSaver.from_env`` does."""
    from langgraph_dualsaver.chain.saver import DualSaver
    from langgraph_dualsaver.offload.store import env_offload

    offload_url = os.environ.get("DUALSAVER_OFFLOAD_URL")
    if not offload_url and not (target.redis_url and target.postgres_url):
        from langgraph_dualsaver.embedded import default_data_dir

        offload_url = (default_data_dir() / "objects").as_uri()
    return DualSaver.from_conn_string(
        redis_url,
        postgres_url,
        mode=target.mode,
        prefix=target.prefix,
        schema=target.schema,
        timeouts=target.timeouts,
        background_flush=False,
        offload=env_offload(offload_url),
    )


@asynccontextmanager
async def open_session(target: Target, *, prepare: bool = True) -> AsyncIterator[Session]:
    """A ``DualSaver`` on the target, once both stores answered.

    With ``prepare``, the tables and the outbox consumer group are created if missing
    (idempotent, as ``DualSaver.from_env()`` does) and a schema is claimed for the
    prefix (refused if another prefix owns it); Redis' configuration is never changed.
    The saver runs no background flusher: only ``dualsaver flush`` flushes, besides the
    flush that ``audit`` and ``prune`` do first.
    """
    redis_url, postgres_url = resolve_urls(target)
    redis, postgres = await probe_both(redis_url, postgres_url, target.timeouts, target.schema)
    problems = [str(p) for p in (redis, postgres) if isinstance(p, Unreachable)]
    if problems:
        raise CliError("\n".join(problems))
    assert isinstance(redis, RedisFacts) and isinstance(postgres, PostgresFacts)
    async with saver_for(target, redis_url, postgres_url) as saver:
        if prepare:
            await saver.durable.asetup()
            await saver.aclaim_schema()
            await saver.flusher.setup()
        yield Session(saver, redis, postgres)


@asynccontextmanager
async def open_saver(target: Target, *, prepare: bool = True) -> AsyncIterator[DualSaver]:
    """``open_session``'s saver alone."""
    async with open_session(target, prepare=prepare) as session:
        yield session.saver


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; store and input errors become ``CliError``."""

    async def main() -> T:
        return await make()

    try:
        return asyncio.run(main())
    except Unreachable as exc:
        raise CliError(str(exc)) from exc
    except DualSaverError as exc:
        raise CliError(str(exc)) from exc


def handle_errors(command: F) -> F:
    """Print a ``CliError`` as ``error: ...`` on stderr and exit 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CliError as exc:
            for line in str(exc).splitlines() or ["failed"]:
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def thread_arg(thread_id: str, what: str = "thread_id") -> str:
    """A thread or checkpoint id from the command line, checked as the savers check it."""
    from langgraph_dualsaver.records import DEFAULT_LIMITS, validate_id

    try:
        return validate_id(what, thread_id, DEFAULT_LIMITS)
    except DualSaverError as exc:
        raise CliError(f"bad {what.replace('_', ' ')}: {exc}") from exc


def env_mode() -> Mode:
    """``DUALSAVER_MODE``, as ``DualSaver.from_env()`` reads it (``DualSaver`` rejects
    any other value with a ``ConfigurationError``)."""
    return cast("Mode", os.environ.get("DUALSAVER_MODE", "write_behind"))
