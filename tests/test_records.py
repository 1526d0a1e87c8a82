"""The pure core, tested directly: no server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT

from langgraph_dualsaver.errors import (
    CheckpointTooLargeError,
    DualSaverError,
    InvalidIdError,
    InvalidMetadataError,
    MissingThreadIdError,
    SerializationError,
)
from langgraph_dualsaver.records import (
    EMPTY_TYPE,
    Limits,
    StoredWrite,
    checkpoint_record,
    decode_checkpoint,
    dump_writes,
    load_blobs,
    metadata_matches,
    next_version,
    pack_record,
    resolve_writes,
    unpack_record,
    writes_record,
)

pytestmark = pytest.mark.pure

SERDE = JsonPlusSerializer()
LIMITS = Limits()


def cfg(**configurable: Any) -> dict:
    return {"configurable": {"checkpoint_ns": "", **configurable}}


def test_checkpoint_record_round_trips_through_msgpack() -> None:
    ckpt = empty_checkpoint()
    ckpt["channel_values"] = {"a": [1, 2], "b": "text"}
    ckpt["channel_versions"] = {"a": 2, "b": "00000000000000000000000000000001.5"}
    record = checkpoint_record(
        SERDE, LIMITS, cfg(thread_id="t", checkpoint_id="parent"), ckpt, {"step": 1}, {"a": 2}
    )
    assert record.parent_checkpoint_id == "parent"
    assert [b.channel for b in record.blobs] == ["a"]  # only the channel that changed
    assert unpack_record(pack_record(record)) == record
    blobs = {(b.channel, b.version): (b.type, b.data) for b in record.blobs}
    restored = decode_checkpoint(record.checkpoint, load_blobs(SERDE, {"a": 2}, blobs))
    assert restored["channel_values"] == {"a": [1, 2]}
    assert restored["channel_versions"] == ckpt["channel_versions"]


def test_a_channel_without_a_value_is_stored_as_empty() -> None:
    ckpt = empty_checkpoint()
    record = checkpoint_record(SERDE, LIMITS, cfg(thread_id="t"), ckpt, {}, {"gone": 3})
    assert [(b.channel, b.version, b.type, b.data) for b in record.blobs] == [
        ("gone", "3", EMPTY_TYPE, None)
    ]


@pytest.mark.parametrize(
    ("configurable", "error"),
    [
        ({}, MissingThreadIdError),
        ({"thread_id": ""}, MissingThreadIdError),
        ({"thread_id": "a\x00b"}, InvalidIdError),
        ({"thread_id": "t", "checkpoint_ns": "n\x00"}, InvalidIdError),
        ({"thread_id": "x" * 801}, InvalidIdError),
        ({"thread_id": 7}, InvalidIdError),
    ],
)
def test_bad_ids_raise_a_specific_error(configurable: dict, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        checkpoint_record(SERDE, LIMITS, {"configurable": configurable}, empty_checkpoint(), {}, {})
    assert isinstance(info.value, DualSaverError) and isinstance(info.value, ValueError)


def test_an_over_long_id_error_names_the_limit() -> None:
    with pytest.raises(InvalidIdError, match=re.escape("Limits.max_id_bytes")):
        checkpoint_record(SERDE, LIMITS, cfg(thread_id="é" * 401), empty_checkpoint(), {}, {})


@pytest.mark.parametrize(
    "metadata",
    [{"k\x00": 1}, {"k": "v\x00"}, {"k": {"nested": ["a", "b\x00"]}}, {"k": float("nan")}],
)
def test_bad_metadata_raises(metadata: dict) -> None:
    with pytest.raises(InvalidMetadataError):
        checkpoint_record(SERDE, LIMITS, cfg(thread_id="t"), empty_checkpoint(), metadata, {})


def test_a_value_over_the_size_cap_raises() -> None:
    ckpt = empty_checkpoint()
    ckpt["channel_values"] = {"big": "x" * 2000}
    with pytest.raises(CheckpointTooLargeError, match="max_value_bytes"):
        checkpoint_record(
            SERDE, Limits(max_value_bytes=1000), cfg(thread_id="t"), ckpt, {}, {"big": 1}
        )


def test_a_value_the_serde_cannot_encode_raises() -> None:
    class Opaque:
        def __reduce__(self):
            raise TypeError("no")

    with pytest.raises(SerializationError, match="'w'"):
        writes_record(
            SERDE, LIMITS, cfg(thread_id="t", checkpoint_id="c"), [("w", Opaque())], "task"
        )


def test_writes_need_a_checkpoint_id() -> None:
    with pytest.raises(InvalidIdError, match="checkpoint_id"):
        writes_record(SERDE, LIMITS, cfg(thread_id="t"), [("w", 1)], "task")


def test_special_writes_overwrite_and_ordinary_writes_do_not() -> None:
    first = dump_writes(SERDE, "task", "~a", [("x", 1), (ERROR, "e1")], LIMITS)
    second = dump_writes(SERDE, "task", "~a", [("x", 2), (ERROR, "e2")], LIMITS)
    resolved = resolve_writes([*first, *second])
    values = {w.channel: SERDE.loads_typed((w.type, w.data)) for w in resolved}
    assert values == {"x": 1, ERROR: "e2"}


def test_writes_come_back_in_task_path_task_id_idx_order() -> None:
    def w(path: str, task: str, idx: int) -> StoredWrite:
        return StoredWrite(task, path, idx, "c", "msgpack", b"")

    shuffled = [w("~b", "t1", 0), w("~a", "t2", 1), w("~a", "t2", 0), w("~a", "t1", 5)]
    ordered = [(r.task_path, r.task_id, r.idx) for r in resolve_writes(shuffled)]
    assert ordered == [("~a", "t1", 5), ("~a", "t2", 0), ("~a", "t2", 1), ("~b", "t1", 0)]


def test_interrupt_writes_use_their_reserved_index() -> None:
    [record] = dump_writes(SERDE, "task", "", [(INTERRUPT, "ask")], LIMITS)
    assert record.idx < 0 and record.overwrites


def test_versions_follow_the_official_format_and_accept_integers() -> None:
    major, _, fraction = next_version(None).partition(".")
    assert (major, len(major)) == (f"{1:032}", 32) and 0 <= float(
        "0." + fraction.split(".")[-1]
    ) < 1
    assert next_version(41).startswith(f"{42:032}.")
    assert next_version(next_version(None)).startswith(f"{2:032}.")


@pytest.mark.parametrize(
    ("metadata", "pattern", "expected"),
    [
        ({"source": "loop", "step": 1}, {"source": "loop"}, True),
        ({"source": "loop", "step": 1}, {"source": "loop", "step": 2}, False),
        ({"step": 1}, {"step": True}, False),
        ({"nested": {"a": 1, "b": 2}}, {"nested": {"a": 1}}, True),
        ({"tags": ["x", "y"]}, {"tags": ["y"]}, True),
        ({"k": 1}, {"source') OR 1=1 --": "x"}, False),
    ],
)
def test_metadata_matching_is_jsonb_containment(metadata, pattern, expected) -> None:
    assert metadata_matches(metadata, pattern) is expected
