"""Credentials out of a connection string before it reaches a person.

``redact`` is the one place that does it: every message, log line and CLI output that
shows a Redis or PostgreSQL URL (or a libpq ``key=value`` DSN) passes it through here.

What is hidden, and why:

* the password of a URL's user info (``user:PASSWORD@``). The user name stays: it says
  who connects and is not a secret.
* the value of every query parameter (``?password=...``, both redis-py and libpq accept
  it), fragment parameter and libpq keyword whose name contains ``pass`` (password,
  sslpassword, redis-py's ssl_password, passphrase, passfile), ``pwd``, ``secret``,
  ``token`` (token, access_token, auth_token), ``auth``, ``key`` (api_key, sslkey),
  ``credential``, or is ``sig`` (a signed URL's signature). Names are matched by part,
  not exactly: hiding a harmless value (a key file's path) costs a less detailed message,
  while missing an unfamiliar name (client_secret, sas_token) would leak a secret.
* the whole authority, path and query of a URL with an ``@`` past its authority: a
  password holding an unencoded ``/``, ``?`` or ``#`` splits there, and its tail would
  otherwise show as the path or fragment.

Every hidden value becomes ``***``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from langgraph_dualsaver.errors import ConfigurationError

__all__ = ["MASK", "is_secret_name", "redact", "unparsable"]

MASK = "***"

_SECRET_PARTS = ("pass", "pwd", "secret", "token", "auth", "key", "credential")
_SECRET_NAMES = frozenset({"sig"})

# libpq's keyword/value form: key = value, the value bare (up to white space) or in
# single quotes with backslash escapes (an unterminated quote runs to the end).
_KEYWORD = re.compile(
    r"(?P<key>[A-Za-z_][A-Za-z0-9_]*)(?P<eq>\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|\S*)"
)


def is_secret_name(name: str) -> bool:
    """Whether a parameter called ``name`` holds a credential (see the module doc)."""
    lowered = unquote_plus(name).strip().lower()
    return lowered in _SECRET_NAMES or any(part in lowered for part in _SECRET_PARTS)


def redact(url_or_dsn: str) -> str:
    """``url_or_dsn`` with every credential replaced by ``***``; anything else as given."""
    text = str(url_or_dsn)
    if "://" in text:
        return _redact_url(text)
    if "=" in text:
        return _KEYWORD.sub(_redact_keyword, text)
    return text


def unparsable(store: str, url: str) -> ConfigurationError:
    """The error for a URL the driver cannot parse. Not the driver's own message: it can
    quote a piece of the password (``invalid literal for int(): 'pa'``), split off
    where an unencoded ``#``, ``/`` or ``?`` in it cut the URL. Raise it ``from None``."""
    return ConfigurationError(
        f"cannot parse the {store} URL {redact(url)}: percent-encode any '#', '/', '?' or "
        "'@' in its user name or password (as %23, %2F, %3F, %40)"
    )


def _redact_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in tail:
        return f"{scheme}{sep}{MASK}"
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            userinfo = f"{user}:{MASK}"
    return f"{scheme}{sep}{userinfo}{at}{host}{_redact_tail(tail)}"


def _redact_tail(tail: str) -> str:
    """Path as given; query and fragment parameters with secret names hidden."""
    path, q, rest = tail.partition("?")
    if q:
        query, h, fragment = rest.partition("#")
        return f"{path}?{_redact_pairs(query)}{h}{_redact_pairs(fragment)}"
    path, h, fragment = tail.partition("#")
    return f"{path}{h}{_redact_pairs(fragment)}"


def _redact_pairs(pairs: str) -> str:
    out = []
    for pair in pairs.split("&"):
        name, eq, value = pair.partition("=")
        out.append(f"{name}={MASK}" if eq and value and is_secret_name(name) else pair)
    return "&".join(out)


def _redact_keyword(match: re.Match[str]) -> str:
    if not match["value"] or not is_secret_name(match["key"]):
        return match[0]
    return f"{match['key']}{match['eq']}{MASK}"
