"""Session-wide real servers. Set DUALSAVER_REDIS_URL / DUALSAVER_POSTGRES_URL to use
running servers instead of the embedded ones. A server that does not start fails the run:
nothing here skips."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
import redis

from tests.servers import fresh_database, fresh_prefix, postgres_server, valkey_server


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (a CI timeout, `kill`) ends the run like Ctrl-C: pytest then tears the
    # fixtures down, so the servers they started are stopped, not left running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("DUALSAVER_REDIS_URL")
    if url:
        yield url
        return
    with valkey_server() as server:
        yield server.url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get("DUALSAVER_POSTGRES_URL")
    if url:
        yield url
        return
    with postgres_server() as server:
        yield server.url


@pytest.fixture
def pg_dsn(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    with fresh_database(postgres_url) as dsn:
        yield dsn


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix for one test; its keys are removed afterwards."""
    with fresh_prefix(redis_url) as prefix:
        yield prefix


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain sync client of the session's Redis, to look at (or break) keys directly."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
