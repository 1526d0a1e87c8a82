"""Real servers for the tests: the embedded wheels, or the URLs in the environment."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis

from langgraph_dualsaver.embedded import EmbeddedPostgres, EmbeddedValkey


def throwaway_dir(prefix: str) -> Path:
    """A fresh directory for a test server, traversable by the postgres system user."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def valkey_server(**options) -> Iterator[EmbeddedValkey]:
    """A throwaway valkey-server, always stopped and removed, even when the test fails."""
    server = EmbeddedValkey(throwaway_dir("dualsaver-valkey-"), **options)
    try:
        yield server.start()
    finally:
        server.stop()
        remove_tree(server.data_dir)


@contextmanager
def postgres_server(**options) -> Iterator[EmbeddedPostgres]:
    """A throwaway PostgreSQL cluster (fsync off), always stopped and removed."""
    options.setdefault("durable", False)
    server = EmbeddedPostgres(throwaway_dir("dualsaver-pg-"), **options)
    try:
        yield server.start()
    finally:
        server.stop()
        remove_tree(server.data_dir)


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server at ``admin_url``; dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:16]

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(admin_url, name)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def fresh_prefix(url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = "t" + uuid.uuid4().hex[:12]
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(url)
        try:
            keys = list(client.scan_iter(match=prefix + ":*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()
