"""No credential in a URL or DSN ever reaches a person: not in ``redact``'s output, not in
``dualsaver status``, not in a saver's error, not in a log line.

Every check uses a real secret string and asserts it appears nowhere.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from typer.testing import CliRunner

from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.cli.app import app
from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from langgraph_dualsaver.embedded import free_port
from langgraph_dualsaver.errors import ConfigurationError, StoreUnavailableError
from langgraph_dualsaver.hot.saver import RedisHotSaver
from langgraph_dualsaver.redact import redact
from tests.servers import valkey_server

SECRET = "Sup3r-s3cret"
CONFIG = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}

# (given, redacted): every credential form, and what must stay as it was.
FORMS = [
    (f"redis://:{SECRET}@h:6379/0", "redis://:***@h:6379/0"),
    (f"rediss://default:{SECRET}@h:6380/1", "rediss://default:***@h:6380/1"),
    (f"redis+cluster://u:{SECRET}@h1:7000", "redis+cluster://u:***@h1:7000"),
    (f"redis://:p@{SECRET}@h/0", "redis://:***@h/0"),  # an unencoded @ in the password
    (f"redis://h:6379/0?password={SECRET}&db=2", "redis://h:6379/0?password=***&db=2"),
    (f"rediss://h/0?ssl_password={SECRET}", "rediss://h/0?ssl_password=***"),
    (f"postgresql://u:{SECRET}@h:5432/db", "postgresql://u:***@h:5432/db"),
    (f"postgresql://u@h1:5432,h2:5433/db?password={SECRET}&sslmode=require",
     "postgresql://u@h1:5432,h2:5433/db?password=***&sslmode=require"),
    (f"postgresql://u@h/db?sslpassword={SECRET}&sslkey=/k.pem",
     "postgresql://u@h/db?sslpassword=***&sslkey=***"),
    (f"postgresql:///db?host=/run/pg&PassWord={SECRET}",
     "postgresql:///db?host=/run/pg&PassWord=***"),
    (f"postgresql://h/db?pass%77ord={SECRET}", "postgresql://h/db?pass%77ord=***"),
    (f"redis://h/0?token={SECRET}&access_token={SECRET}&auth={SECRET}",
     "redis://h/0?token=***&access_token=***&auth=***"),
    (f"postgresql://h/db?client_secret={SECRET}&api_key={SECRET}&sig={SECRET}",
     "postgresql://h/db?client_secret=***&api_key=***&sig=***"),
    (f"https://h/x#access_token={SECRET}&state=1", "https://h/x#access_token=***&state=1"),
    # a password with an unencoded '#', '/' or '?' splits the URL: hide all of it
    (f"redis://:ab#{SECRET}@h/0", "redis://***"),
    (f"redis://u:ab/{SECRET}@h/0", "redis://***"),
    (f"redis://:ab?{SECRET}@h/0", "redis://***"),
    # libpq keyword/value DSNs: bare, quoted with spaces and escapes, spaced '='
    (f"host=h port=5432 password={SECRET} dbname=d", "host=h port=5432 password=*** dbname=d"),
    (f"host=h password='{SECRET} x\\' y' user=u", "host=h password=*** user=u"),
    (f"host=h password = {SECRET}", "host=h password = ***"),
    (f"host=h sslpassword={SECRET}", "host=h sslpassword=***"),
    (f"host=h password='{SECRET} unterminated", "host=h password=***"),
    # nothing secret: unchanged
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://postgres@127.0.0.1:5432/postgres"),
    ("redis://:@h/0", "redis://:@h/0"),
    ("host=h dbname=d", "host=h dbname=d"),
    ("the given client", "the given client"),
]  # fmt: skip


@pytest.fixture(scope="module")
def secured_redis_port() -> Iterator[int]:
    """A Valkey whose password is ``SECRET``."""
    with valkey_server(password=SECRET) as server:
        yield server.port


def closed_port() -> int:
    return free_port()  # bound, then released: nothing listens there


@pytest.mark.pure
@pytest.mark.parametrize(("given", "expected"), FORMS)
def test_redact_hides_every_credential_form(given: str, expected: str) -> None:
    assert redact(given) == expected
    assert SECRET not in redact(given)


async def test_an_unreachable_redis_error_never_shows_the_password() -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0?password={SECRET}"
    async with RedisHotSaver.from_conn_string(url) as saver:
        with pytest.raises(StoreUnavailableError) as raised:
            await saver.aget_tuple(CONFIG)
    assert SECRET not in str(raised.value)
    assert "redis://:***@127.0.0.1" in str(raised.value)


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://u:{SECRET}@127.0.0.1:{{port}}/db?sslpassword={SECRET}",
        f"postgresql://u@127.0.0.1:{{port}}/db?password={SECRET}",
    ],
)
async def test_an_unreachable_postgres_error_never_shows_the_password(dsn: str) -> None:
    dsn = dsn.format(port=closed_port())
    async with PostgresDurableSaver.from_conn_string(dsn) as saver:
        with pytest.raises(StoreUnavailableError) as raised:
            await saver.aget_tuple(CONFIG)
    assert SECRET not in str(raised.value)
    assert "***" in str(raised.value)


async def test_a_keyword_dsn_refused_by_the_driver_never_shows_the_password() -> None:
    dsn = f"host=127.0.0.1 port={closed_port()} password={SECRET}"
    async with PostgresDurableSaver.from_conn_string(dsn) as saver:
        with pytest.raises(ConfigurationError) as raised:
            await saver.aget_tuple(CONFIG)
    assert SECRET not in str(raised.value)
    assert "password=***" in str(raised.value)


async def test_the_degraded_mode_log_line_never_shows_the_password(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    redis_url = f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0"
    caplog.set_level(logging.WARNING, logger="langgraph_dualsaver")
    async with DualSaver.from_conn_string(redis_url, pg_dsn, background_flush=False) as saver:
        await saver.durable.asetup()
        await saver.aput(CONFIG, empty_checkpoint(), {"source": "input", "step": -1}, {})
    assert "Redis unavailable" in caplog.text
    assert "redis://:***@127.0.0.1" in caplog.text
    assert SECRET not in caplog.text


def _status(redis_url: str, postgres_url: str, *args: str):
    env = {"DUALSAVER_REDIS_URL": redis_url, "DUALSAVER_POSTGRES_URL": postgres_url,
           "COLUMNS": "300"}  # fmt: skip
    return CliRunner().invoke(app, ["--timeout", "2", "status", *args], env=env)


@pytest.mark.parametrize("as_json", [False, True])
def test_status_of_reachable_stores_never_shows_a_password(
    secured_redis_port: int, postgres_url: str, as_json: bool
) -> None:
    # Both drivers take a password from the query string (PostgreSQL's trust auth
    # ignores it).
    result = _status(
        f"redis://127.0.0.1:{secured_redis_port}/0?password={SECRET}",
        f"{postgres_url}?password={SECRET}",
        *(["--json"] if as_json else []),
    )
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert len(re.findall(r"password=\*\*\*", result.stdout)) == 2


def test_status_of_unreachable_stores_never_shows_a_password() -> None:
    result = _status(
        f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0",
        f"postgresql://postgres:{SECRET}@127.0.0.1:{closed_port()}/postgres",
    )
    assert result.exit_code == 1
    assert SECRET not in result.output
    assert "UNREACHABLE at redis://:***@127.0.0.1" in result.stdout
    assert "cannot reach PostgreSQL at postgresql://postgres:***@127.0.0.1" in result.stderr


# A password with an unencoded '#', '/' or '?' cuts the URL there, and both drivers then
# quote the piece before it in their error: "invalid literal for int(): 'Sup3r-s3cret'".


def test_an_unparsable_redis_url_never_shows_the_password() -> None:
    with pytest.raises(ConfigurationError, match="percent-encode") as raised:
        RedisHotSaver(url=f"redis://:{SECRET}#tail@127.0.0.1:{closed_port()}/0")
    assert SECRET not in str(raised.value) and raised.value.__suppress_context__


async def test_an_unparsable_postgres_url_never_shows_the_password() -> None:
    dsn = f"postgresql://u:{SECRET}/tail@127.0.0.1:{closed_port()}/db"
    async with PostgresDurableSaver.from_conn_string(dsn) as saver:
        with pytest.raises(ConfigurationError, match="percent-encode") as raised:
            await saver.aget_tuple(CONFIG)
    assert SECRET not in str(raised.value) and raised.value.__suppress_context__


@pytest.mark.parametrize("cut", ["#", "/", "?"])
def test_the_cli_names_an_unparsable_url_without_its_password(cut: str) -> None:
    for redis_url, postgres_url in [
        (f"redis://:{SECRET}{cut}x@127.0.0.1:{closed_port()}/0", "postgresql://u@127.0.0.1:1/d"),
        ("redis://127.0.0.1:1/0", f"postgresql://u:{SECRET}{cut}x@127.0.0.1:{closed_port()}/d"),
    ]:
        result = _status(redis_url, postgres_url)
        assert result.exit_code == 1
        assert "URL" in result.stderr and "percent-encode" in result.stderr
        assert SECRET not in result.output
