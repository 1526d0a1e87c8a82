"""What to say when a store refuses the credentials in its URL.

A refused password is not an outage: neither waiting nor retrying fixes it, and a
``DualSaver`` must not fall back to PostgreSQL because of it. The savers and the CLI turn
these errors into ``StoreAuthenticationError`` (a ``ConfigurationError``) whose message
names the problem and what to change. ``where`` is the store and its redacted URL.
"""

from __future__ import annotations

import asyncpg
from redis import exceptions as rex

from langgraph_dualsaver.errors import StoreAuthenticationError

__all__ = ["POSTGRES_AUTH_ERRORS", "REDIS_AUTH_ERRORS", "postgres_auth_error", "redis_auth_error"]

REDIS_AUTH_ERRORS: tuple[type[Exception], ...] = (
    rex.AuthenticationError,  # WRONGPASS, NOAUTH, a password the server does not have
    rex.AuthenticationWrongNumberOfArgsError,  # a user name sent to Redis < 6
    rex.NoPermissionError,  # NOPERM: the ACL user may not run a command or touch a key
)
POSTGRES_AUTH_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # 28000, and 28P01 below it
)

_REDIS_URL = "redis://:PASSWORD@HOST:PORT/DB, or redis://USER:PASSWORD@HOST:PORT/DB"


def redis_auth_error(exc: Exception, where: str) -> StoreAuthenticationError:
    """The message for one of ``REDIS_AUTH_ERRORS``."""
    text = str(exc)
    if isinstance(exc, rex.AuthenticationWrongNumberOfArgsError):
        problem = "takes no user name with the password (Redis before 6 has no ACL users)"
        fix = "remove the user name from the URL: redis://:PASSWORD@HOST:PORT/DB"
    elif isinstance(exc, rex.NoPermissionError):
        problem = "does not let the URL's user run a command the saver needs"
        fix = "grant that user the saver's commands and keys (ACL SETUSER), or use another"
    elif "without any password" in text or "no password is set" in text:
        problem = "has no password set, but the URL gives one"
        fix = "remove it from the URL, or set requirepass on the server"
    elif "authentication required" in text.lower() or "already authenticated" in text:
        problem = "requires a password and the URL gives none"
        fix = f"add it to the URL: {_REDIS_URL} for an ACL user"
    else:
        problem = "refused the user name or password in the URL"
        fix = f"correct them ({_REDIS_URL}; the user is 'default' unless the URL names one)"
    return StoreAuthenticationError(f"{where} {problem} ({type(exc).__name__}: {text}): {fix}")


def postgres_auth_error(exc: Exception, where: str) -> StoreAuthenticationError:
    """The message for one of ``POSTGRES_AUTH_ERRORS``. PostgreSQL says the same for a
    wrong password, a missing one and an unknown user (so as not to reveal which)."""
    if isinstance(exc, asyncpg.exceptions.InvalidPasswordError):
        problem = "refused the user name or password in the URL"
        fix = "correct them: postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    else:
        problem = "refused the connection"
        fix = "check the user name in the URL and that pg_hba.conf admits it from this host"
    return StoreAuthenticationError(f"{where} {problem} ({type(exc).__name__}: {exc}): {fix}")
