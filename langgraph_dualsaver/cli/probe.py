"""Look at the two servers directly: reachable or not, versions, persistence settings.

The commands probe before they open a saver, so an unreachable store gives one clear
message naming the store, its URL and what to do, within ``Timeouts.connect``.
``warnings_for`` (pure) says which settings weaken the saver's guarantees.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from langgraph_dualsaver.auth_errors import (
    POSTGRES_AUTH_ERRORS,
    REDIS_AUTH_ERRORS,
    postgres_auth_error,
    redis_auth_error,
)
from langgraph_dualsaver.redact import redact, unparsable
from langgraph_dualsaver.settings import Timeouts

__all__ = [
    "PostgresFacts",
    "RedisFacts",
    "Unreachable",
    "postgres_facts",
    "redis_facts",
    "warnings_for",
]

OUTBOX_AGE_WARNING_S = 60.0
"""An outbox whose oldest entry is older than this has no flusher keeping up."""


class Unreachable(Exception):
    """A store did not answer; the message says which, where and what to do."""

    def __init__(self, store: str, url: str, reason: str, env: str, option: str) -> None:
        self.store = store
        self.url = url
        self.reason = reason
        super().__init__(
            f"cannot reach {store} at {redact(url)} ({reason}): start it with "
            f"`dualsaver up`, or set {env} (or {option}) to a running server"
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "no answer within the timeout"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- Redis ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisFacts:
    """What ``INFO`` and ``CONFIG GET`` say; ``None`` where CONFIG is disabled."""

    url: str
    server: str
    version: str
    appendonly: str | None
    appendfsync: str | None
    maxmemory_policy: str | None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def redis_facts(url: str, timeouts: Timeouts | None = None) -> RedisFacts:
    """Connect, read the server's version and persistence settings, disconnect.

    Raises ``Unreachable`` when the server does not answer, ``StoreAuthenticationError``
    when it refuses the URL's credentials.
    """
    from redis import exceptions as rex
    from redis.asyncio import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    timeouts = timeouts or Timeouts()
    plain = url.replace("+cluster://", "://", 1)  # INFO / CONFIG GET of the node given
    try:
        client = Redis.from_url(
            plain,
            socket_connect_timeout=timeouts.connect_s,
            socket_timeout=timeouts.command_s,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError:
        raise unparsable("Redis", url) from None
    try:
        info = await client.info("server")
        config: dict[str, str | None] = {}
        for name in ("appendonly", "appendfsync", "maxmemory-policy"):
            try:
                reply = await client.config_get(name)
            except rex.ResponseError:  # CONFIG renamed or disabled (managed services)
                config[name] = None
                continue
            config[name] = next((_text(v) for v in reply.values()), None)
    except REDIS_AUTH_ERRORS as exc:
        raise redis_auth_error(exc, f"Redis at {redact(url)}") from exc
    except (rex.ConnectionError, rex.TimeoutError, rex.ResponseError, OSError) as exc:
        raise Unreachable("Redis", url, _reason(exc), "DUALSAVER_REDIS_URL", "--redis-url") from exc
    finally:
        await client.aclose()
    server = _text(info.get("server_name") or "redis")
    version = _text(info.get("valkey_version") or info.get("redis_version") or "?")
    return RedisFacts(
        url=redact(url),
        server=server,
        version=version,
        appendonly=config["appendonly"],
        appendfsync=config["appendfsync"],
        maxmemory_policy=config["maxmemory-policy"],
    )


# -- PostgreSQL -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PostgresFacts:
    """What ``SHOW`` says, and the dualsaver schema version (-1: not set up)."""

    url: str
    version: str
    fsync: str
    synchronous_commit: str
    full_page_writes: str
    schema_version: int
    schema_latest: int


async def postgres_facts(
    url: str, timeouts: Timeouts | None = None, schema: str | None = None
) -> PostgresFacts:
    """Connect, read the server's version, durability settings and the version of the
    tables (in ``schema``, if given).

    Raises ``Unreachable`` when the server does not answer, ``StoreAuthenticationError``
    when it refuses the URL's credentials.
    """
    import asyncpg

    from langgraph_dualsaver.durable import sql as postgres_sql
    from langgraph_dualsaver.durable.saver import PostgresDurableSaver

    timeouts = timeouts or Timeouts()
    settings = None if schema is None else PostgresDurableSaver.schema_settings(schema)
    try:
        conn = await asyncpg.connect(
            url,
            timeout=timeouts.connect_s,
            command_timeout=timeouts.command_s,
            server_settings=settings,
        )
    except POSTGRES_AUTH_ERRORS as exc:
        raise postgres_auth_error(exc, f"PostgreSQL at {redact(url)}") from exc
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unreachable(
            "PostgreSQL", url, _reason(exc), "DUALSAVER_POSTGRES_URL", "--postgres-url"
        ) from exc
    except ValueError:
        raise unparsable("PostgreSQL", url) from None
    try:
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("server_version", "fsync", "synchronous_commit", "full_page_writes")
        }
        schema_version = -1
        if await conn.fetchval("SELECT to_regclass('dualsaver_migrations') IS NOT NULL"):
            schema_version = await conn.fetchval(postgres_sql.CURRENT_MIGRATION)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
        raise Unreachable(
            "PostgreSQL", url, _reason(exc), "DUALSAVER_POSTGRES_URL", "--postgres-url"
        ) from exc
    finally:
        await conn.close()
    return PostgresFacts(
        url=redact(url),
        version=str(settings["server_version"]),
        fsync=str(settings["fsync"]),
        synchronous_commit=str(settings["synchronous_commit"]),
        full_page_writes=str(settings["full_page_writes"]),
        schema_version=int(schema_version),
        schema_latest=len(postgres_sql.MIGRATIONS) - 1,
    )


# -- what weakens the guarantees --------------------------------------------------------


def warnings_for(
    redis: RedisFacts | None,
    postgres: PostgresFacts | None,
    *,
    outbox_age_s: float | None = None,
    dead_letters: int = 0,
) -> list[str]:
    """Settings and states that weaken what the README promises, each with what to do."""
    from langgraph_dualsaver.hot.write_wait import evicts_unexpiring_keys

    found = []
    if redis is not None:
        policy = redis.maxmemory_policy
        if policy and evicts_unexpiring_keys(policy):
            found.append(
                f"Redis maxmemory-policy is {policy}: it can evict outbox entries and "
                "checkpoints not yet in PostgreSQL; set it to noeviction "
                "(`dualsaver setup` refuses this policy)"
            )
        if redis.appendonly == "no":
            found.append(
                "Redis appendonly is off: in write_behind mode a Redis crash loses the "
                "outbox entries not yet flushed (at most max_lag); set appendonly yes, "
                "or use write_through"
            )
        elif redis.appendonly == "yes" and redis.appendfsync == "no":
            found.append(
                "Redis appendfsync is no: the OS decides when the AOF reaches disk; "
                "use everysec (at most one second of writes at risk) or always"
            )
        if redis.maxmemory_policy is None or redis.appendonly is None:
            found.append(
                "Redis CONFIG GET is disabled: check by hand that appendonly is on and "
                "maxmemory-policy is noeviction"
            )
    if postgres is not None:
        if postgres.fsync == "off":
            found.append(
                "PostgreSQL fsync is off: a machine crash can lose or corrupt committed "
                "checkpoints; turn it on outside throwaway test clusters"
            )
        if postgres.synchronous_commit == "off":
            found.append(
                "PostgreSQL synchronous_commit is off: a server crash can lose the last "
                "commits (up to 3 x wal_writer_delay) although the flusher acknowledged them"
            )
        if postgres.full_page_writes == "off":
            found.append(
                "PostgreSQL full_page_writes is off: a crash during a write can corrupt pages"
            )
        if postgres.schema_version < postgres.schema_latest:
            found.append(
                f"the dualsaver schema is at version {postgres.schema_version}, "
                f"the code expects {postgres.schema_latest}: run `dualsaver setup`"
            )
    if outbox_age_s is not None and outbox_age_s > OUTBOX_AGE_WARNING_S:
        found.append(
            f"the oldest outbox entry is {outbox_age_s:.0f} s old: is a flusher running? "
            "(`dualsaver flush --follow`, or an application with background_flush=True)"
        )
    if dead_letters:
        found.append(
            f"{dead_letters} outbox entries are dead letters (the flusher gave up on them: "
            "they are not in PostgreSQL); `dualsaver deadletters list` shows them, "
            "`replay` puts them back after a fix"
        )
    return found
