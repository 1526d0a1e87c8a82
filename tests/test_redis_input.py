"""Bad options for RedisHotSaver, refused before it connects. Bad input to the saver's
methods, the same for every saver kind, is in ``tests/contract/test_bad_input.py``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio

from langgraph_dualsaver.errors import ConfigurationError
from langgraph_dualsaver.hot.saver import RedisHotSaver


@pytest.mark.parametrize(
    "options",
    [
        {"prefix": "a{b"},
        {"ttl": 60},
        {"ttl": timedelta(0)},
        {"shards": 0},
        {"shards": True},
    ],
    ids=["prefix-brace", "ttl-int", "ttl-zero", "shards-zero", "shards-bool"],
)
def test_bad_options_are_refused_before_connecting(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisHotSaver(url="redis://127.0.0.1:1/0", **options)


def test_a_client_and_a_url_at_once_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="exactly one"):
        RedisHotSaver(redis.asyncio.Redis(), url="redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisHotSaver(redis.asyncio.Redis(decode_responses=True))
