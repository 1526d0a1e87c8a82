"""A serializer that refuses one type: the "value the serde cannot encode" case of
every saver's bad-input tests."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer


class Unstorable:
    """A value the test serde refuses."""


class RefusingSerde(JsonPlusSerializer):
    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if isinstance(obj, Unstorable):
            raise TypeError("Unstorable is not serializable")
        return super().dumps_typed(obj)
