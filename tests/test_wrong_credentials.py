"""A store that refuses the URL's credentials is reported as that, with what to fix: a
``StoreAuthenticationError`` (a ``ConfigurationError``), never "unreachable", from the
savers and from the CLI. Real servers started with a password."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from redis import exceptions as rex
from typer.testing import CliRunner, Result

from langgraph_dualsaver.auth_errors import redis_auth_error
from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.cli.app import app
from langgraph_dualsaver.durable.saver import PostgresDurableSaver
from langgraph_dualsaver.embedded import EmbeddedPostgres, EmbeddedValkey
from langgraph_dualsaver.errors import StoreAuthenticationError
from langgraph_dualsaver.hot.saver import RedisHotSaver
from tests.servers import postgres_server, valkey_server

PASSWORD = "right-Pa55"
WRONG = "wrong-Pa55"
CONFIG = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
REFUSED = "refused the user name or password in the URL"


@pytest.fixture(scope="module")
def valkey() -> Iterator[EmbeddedValkey]:
    with valkey_server(password=PASSWORD) as server:
        with redis.Redis(port=server.port, password=PASSWORD) as admin:
            # An ACL user that may read keys but not run INFO, which setup needs.
            admin.acl_setuser("reader", enabled=True, passwords=[f"+{PASSWORD}"],
                              keys=["*"], commands=["+@read"])  # fmt: skip
        yield server


@pytest.fixture(scope="module")
def postgres() -> Iterator[EmbeddedPostgres]:
    with postgres_server(password=PASSWORD) as server:
        yield server


def redis_url(server: EmbeddedValkey, userinfo: str) -> str:
    return f"redis://{userinfo}127.0.0.1:{server.port}/0"


async def setup_error(url: str) -> str:
    async with RedisHotSaver.from_conn_string(url) as saver:
        with pytest.raises(StoreAuthenticationError) as raised:
            await saver.asetup()
    return str(raised.value)


async def test_the_right_password_works(valkey: EmbeddedValkey) -> None:
    async with RedisHotSaver.from_conn_string(redis_url(valkey, f":{PASSWORD}@")) as saver:
        await saver.asetup()
        await saver.aput(CONFIG, empty_checkpoint(), {}, {})


async def test_a_wrong_redis_password_says_to_correct_it(valkey: EmbeddedValkey) -> None:
    message = await setup_error(redis_url(valkey, f":{WRONG}@"))
    assert message.startswith("redis at ")
    assert f"127.0.0.1:{valkey.port}/0 {REFUSED}" in message
    assert "correct them" in message and WRONG not in message


async def test_a_wrong_redis_user_says_to_correct_it(valkey: EmbeddedValkey) -> None:
    message = await setup_error(redis_url(valkey, f"nobody:{PASSWORD}@"))
    assert REFUSED in message and PASSWORD not in message


async def test_a_missing_redis_password_says_to_add_it(valkey: EmbeddedValkey) -> None:
    message = await setup_error(redis_url(valkey, ""))
    assert "requires a password and the URL gives none" in message
    assert "add it to the URL: redis://:PASSWORD@HOST:PORT/DB" in message


@pytest.mark.pure
@pytest.mark.parametrize(
    ("error", "says"),
    [
        (rex.AuthenticationError("Client sent AUTH, but no password is set"),
         "has no password set, but the URL gives one (AuthenticationError: Client sent AUTH, "
         "but no password is set): remove it from the URL, or set requirepass on the server"),
        (rex.AuthenticationWrongNumberOfArgsError("wrong number of arguments for 'auth' command"),
         "takes no user name with the password (Redis before 6 has no ACL users)"),
    ],
)  # fmt: skip
def test_replies_only_redis_before_6_gives_are_named_too(error: Exception, says: str) -> None:
    """Valkey 8 accepts any password for a user without one, and takes user names, so
    these two replies (from Redis < 6, as redis-py raises them) cannot be provoked here."""
    message = str(redis_auth_error(error, "redis at redis://h/0"))
    assert message.startswith(f"redis at redis://h/0 {says}")


async def test_a_user_without_the_rights_says_to_grant_them(valkey: EmbeddedValkey) -> None:
    message = await setup_error(redis_url(valkey, f"reader:{PASSWORD}@"))
    assert "does not let the URL's user run a command the saver needs" in message
    assert "ACL SETUSER" in message


async def test_a_wrong_redis_password_fails_the_chain_instead_of_degrading(
    valkey: EmbeddedValkey, pg_dsn: str
) -> None:
    url = redis_url(valkey, f":{WRONG}@")
    async with DualSaver.from_conn_string(url, pg_dsn, background_flush=False) as saver:
        await saver.durable.asetup()
        with pytest.raises(StoreAuthenticationError, match=REFUSED):
            await saver.aput(CONFIG, empty_checkpoint(), {}, {})
        assert await saver.durable.athreads() == []


@pytest.mark.parametrize("userinfo", [f"postgres:{WRONG}@", "postgres@", f"nobody:{PASSWORD}@"])
async def test_a_refused_postgres_login_says_to_correct_it(
    postgres: EmbeddedPostgres, userinfo: str
) -> None:
    dsn = f"postgresql://{userinfo}127.0.0.1:{postgres.port}/postgres"
    async with PostgresDurableSaver.from_conn_string(dsn) as saver:
        with pytest.raises(StoreAuthenticationError) as raised:
            await saver.asetup()
    message = str(raised.value)
    assert message.startswith("PostgreSQL at ")
    assert f"127.0.0.1:{postgres.port}/postgres {REFUSED}" in message
    assert "postgresql://USER:PASSWORD@HOST:PORT/DATABASE" in message
    assert WRONG not in message and PASSWORD not in message


async def test_the_right_postgres_password_works(postgres: EmbeddedPostgres) -> None:
    async with PostgresDurableSaver.from_conn_string(postgres.url) as saver:
        await saver.asetup()


def status(redis_url: str, postgres_url: str) -> Result:
    env = {"DUALSAVER_REDIS_URL": redis_url, "DUALSAVER_POSTGRES_URL": postgres_url}
    return CliRunner().invoke(app, ["--timeout", "2", "status"], env=env)


def test_the_cli_reports_a_wrong_redis_password_as_such(
    valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> None:
    result = status(redis_url(valkey, f":{WRONG}@"), postgres.url)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: Redis at redis://:***@127.0.0.1")
    assert REFUSED in result.stderr
    assert "cannot reach" not in result.output and "UNREACHABLE" not in result.output
    assert WRONG not in result.output


def test_the_cli_reports_a_wrong_postgres_password_as_such(
    valkey: EmbeddedValkey, postgres: EmbeddedPostgres
) -> None:
    url = postgres.url.replace(PASSWORD, WRONG)
    result = status(redis_url(valkey, f":{PASSWORD}@"), url)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: PostgreSQL at postgresql://postgres:***@127.0.0.1")
    assert REFUSED in result.stderr
    assert "cannot reach" not in result.output and "UNREACHABLE" not in result.output
    assert WRONG not in result.output and PASSWORD not in result.output
