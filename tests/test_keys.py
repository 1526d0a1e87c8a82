"""The Redis key layout and value encodings, tested directly (pure, no server)."""

from __future__ import annotations

import re

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from redis.crc import key_slot

from langgraph_dualsaver.errors import ConfigurationError
from langgraph_dualsaver.hot import keys as K
from langgraph_dualsaver.hot import scripts as S
from langgraph_dualsaver.records import (
    EMPTY_TYPE,
    BlobRecord,
    CheckpointRecord,
    StoredWrite,
    encode_checkpoint,
)

pytestmark = pytest.mark.pure

ADVERSARIAL = ["*", "?", "[a-z]*", "{x}", "a:b", "}{", "\\", " ", "ü→🙂", "node:1|child:2", ""]
ids = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: between the first '{' and the next '}'."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


@pytest.mark.parametrize("prefix", ["", "a{b", "a}b", "a\x00b", 7])
def test_a_prefix_that_would_break_the_hash_tags_is_refused(prefix: object) -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        K.validate_prefix(prefix)


@pytest.mark.parametrize("thread_id", [*ADVERSARIAL[:-1], "x" * 1_000_000])
def test_every_key_of_a_thread_shares_its_shard_tag_and_has_a_fixed_shape(thread_id: str) -> None:
    tk = K.thread_keys("pfx", 16, thread_id)
    tags = {hash_tag(key) for key in tk.all}
    assert tags == {f"pfx:s{tk.shard}"}
    assert tk.shard == K.shard_of(thread_id, 16) == int(K.thread_digest(thread_id)[:8], 16) % 16
    shape = re.compile(r"^pfx:\{pfx:s\d+\}:[0-9a-f]{64}:(meta|cp|idx|blobs|writes)$")
    assert all(shape.match(key) for key in tk.data), tk.data
    assert tk.outbox == K.outbox_key("pfx", tk.shard) == f"pfx:{{pfx:s{tk.shard}}}:outbox"
    assert K.dead_letter_key("pfx", tk.shard) == f"pfx:{{pfx:s{tk.shard}}}:dead"


def test_keys_hold_no_pattern_characters_whatever_the_thread_id() -> None:
    for thread_id in ADVERSARIAL[:-1]:
        for key in K.thread_keys("pfx", 16, thread_id).all:
            assert not set(key) & set("*?[]\\ "), key


@given(ids, ids)
def test_distinct_threads_never_share_keys(a: str, b: str) -> None:
    if a != b:
        assert not set(K.thread_keys("p", 4, a).all[:5]) & set(K.thread_keys("p", 4, b).all[:5])


def test_threads_spread_over_every_shard() -> None:
    shards = {K.shard_of(f"thread-{i}", 16) for i in range(400)}
    assert shards == set(range(16))


@given(ids, ids, ids, ids)
def test_cp_fields_never_alias(ns1: str, id1: str, ns2: str, id2: str) -> None:
    same = K.cp_field(ns1, id1) == K.cp_field(ns2, id2)
    assert same == ((ns1, id1) == (ns2, id2))


@given(ids, ids, ids, ids, ids, ids)
def test_blob_fields_never_alias(ns1: str, c1: str, v1: str, ns2: str, c2: str, v2: str) -> None:
    same = K.blob_field(ns1, c1, v1) == K.blob_field(ns2, c2, v2)
    assert same == ((ns1, c1, v1) == (ns2, c2, v2))


@pytest.mark.parametrize(
    ("first", "second"),
    [(("a:b", "c"), ("a", "b:c")), (("", "x"), ("__empty__", "x")), (("a", ""), ("", "a"))],
)
def test_the_aliasing_pairs_of_naive_layouts_stay_apart(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    assert K.cp_field(*first) != K.cp_field(*second)
    assert K.blob_field(*first, "1") != K.blob_field(*second, "1")


@given(ids, ids)
def test_cp_fields_split_back_exactly(ns: str, checkpoint_id: str) -> None:
    assert K.split_cp_field(K.cp_field(ns, checkpoint_id)) == (ns, checkpoint_id)


@given(ids, ids, ids)
def test_blob_fields_split_back_exactly(ns: str, channel: str, version: str) -> None:
    assert K.split_blob_field(K.blob_field(ns, channel, version)) == (ns, channel, version)


@given(ids, ids, ids)
def test_a_namespace_range_holds_exactly_its_own_checkpoints(ns: str, other: str, cid: str) -> None:
    upper, lower = K.latest_range(ns)
    assert upper[:1] == b"(" and lower[:1] == b"["
    field = K.cp_field(other, cid)
    inside = lower[1:] <= field < upper[1:]
    assert inside == (other == ns)


@given(ids, st.lists(ids, min_size=1, max_size=5))
def test_before_bounds_the_range_to_older_ids(ns: str, checkpoint_ids: list[str]) -> None:
    before = checkpoint_ids[0]
    upper, lower = K.latest_range(ns, before)
    for cid in checkpoint_ids:
        field = K.cp_field(ns, cid)
        assert (lower[1:] <= field < upper[1:]) == (K.utf8(cid) < K.utf8(before))




def test_the_empty_blob_is_the_literal_the_lua_scripts_compare_against() -> None:
    assert msgpack.packb([EMPTY_TYPE, None]) == K.EMPTY_BLOB
    literal = "".join(f"\\{b}" if b >= 128 else chr(b) for b in K.EMPTY_BLOB)
    assert f"local EMPTY_BLOB = '{literal}'" in S.LOAD.body


def test_a_stored_checkpoint_keeps_its_bytes_and_names_its_blob_fields() -> None:
    checkpoint = {
        "v": 4,
        "id": "cp-2",
        "ts": "2024-01-01T00:00:00+00:00",
        "channel_values": {"a": 1},
        "channel_versions": {"a": "00002.5", "b": 3},
        "versions_seen": {},
        "updated_channels": None,
    }
    record = CheckpointRecord("t", "ns|x", "cp-2", "cp-1", encode_checkpoint(checkpoint), b"{}")
    stored = K.decode_stored_checkpoint(K.encode_stored_checkpoint(record))
    assert stored.checkpoint == record.checkpoint and stored.metadata == b"{}"
    assert stored.parent_id == "cp-1"
    assert stored.channels == ("a", "b")
    assert stored.blob_fields == (
        K.blob_field("ns|x", "a", "00002.5"),
        K.blob_field("ns|x", "b", "3"),
    )
    root = CheckpointRecord("t", "", "cp-1", None, encode_checkpoint(checkpoint), b"{}")
    assert K.decode_stored_checkpoint(K.encode_stored_checkpoint(root)).parent_id is None


def test_a_stored_checkpoint_uses_only_the_msgpack_types_lua_cmsgpack_reads() -> None:
    checkpoint = {"v": 4, "id": "x", "channel_versions": {"c" * 40: "v" * 300}}
    record = CheckpointRecord("t", "n" * 70_000, "x", None, encode_checkpoint(checkpoint), b"{}")
    stored = K.encode_stored_checkpoint(record)
    # bin8/16/32 and str8 came with the 2013 spec; Lua's cmsgpack reads raw16/raw32.
    types = _type_bytes(stored)
    assert not types & {0xC4, 0xC5, 0xC6, 0xD9}, sorted(types)
    assert {0xDA, 0xDB} <= types


def _type_bytes(data: bytes) -> set[int]:
    """The type byte of every object in a msgpack document (walking it by hand)."""
    seen: set[int] = set()

    def walk(pos: int) -> int:
        b = data[pos]
        seen.add(b)
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
            return pos + 1
        if 0xA0 <= b <= 0xBF:
            return pos + 1 + (b & 0x1F)
        if 0x90 <= b <= 0x9F:
            pos += 1
            for _ in range(b & 0x0F):
                pos = walk(pos)
            return pos
        if b in (0xDA, 0xDB, 0xC5, 0xC6, 0xC4, 0xD9):
            width = {0xDA: 2, 0xDB: 4, 0xC5: 2, 0xC6: 4, 0xC4: 1, 0xD9: 1}[b]
            return pos + 1 + width + int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
        if b in (0xDC, 0xDD):
            width = 2 if b == 0xDC else 4
            count = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
            pos += 1 + width
            for _ in range(count):
                pos = walk(pos)
            return pos
        raise AssertionError(f"unexpected msgpack type byte {b:#x}")

    assert walk(0) == len(data)
    return seen


def test_a_writes_log_reads_back_in_arrival_order() -> None:
    writes = [
        StoredWrite("t1", "p", 0, "a", "json", b"1"),
        StoredWrite("t1", "p", -3, "__interrupt__", "msgpack", b"\x00\xff"),
        StoredWrite("t0", "", 0, "a", "json", b"2"),
    ]
    log = b"".join(K.encode_write(w) for w in writes)
    assert K.decode_writes_log(log) == writes
    assert K.decode_writes_log(None) == [] and K.decode_writes_log(b"") == []


def test_a_blob_round_trips_and_an_empty_one_has_no_value() -> None:
    assert K.decode_blob(K.encode_blob(BlobRecord("c", "1", "json", b"{}"))) == ("json", b"{}")
    assert K.decode_blob(K.EMPTY_BLOB) == (EMPTY_TYPE, None)


def test_a_checkpoint_tuple_is_rebuilt_from_what_the_layout_stores() -> None:
    serde = JsonPlusSerializer()
    checkpoint = {
        "v": 4,
        "id": "cp-2",
        "ts": "t",
        "channel_versions": {"a": "2", "gone": "1"},
        "versions_seen": {},
    }
    record = CheckpointRecord("t", "ns", "cp-2", "cp-1", encode_checkpoint(checkpoint), b'{"k":1}')
    stored = K.encode_stored_checkpoint(record)
    blobs = {
        K.blob_field("ns", "a", "2"): K.encode_blob(BlobRecord("a", "2", *serde.dumps_typed([1]))),
        K.blob_field("ns", "gone", "1"): K.EMPTY_BLOB,
    }
    field = K.cp_field("ns", "cp-2")
    members = [K.write_member(field, StoredWrite("task", "", 0, "a", *serde.dumps_typed("w")))]
    tup = K.checkpoint_tuple(serde, "t", field, stored, members, blobs)
    assert tup.config["configurable"] == {
        "thread_id": "t",
        "checkpoint_ns": "ns",
        "checkpoint_id": "cp-2",
    }
    assert tup.parent_config["configurable"]["checkpoint_id"] == "cp-1"
    assert tup.checkpoint["channel_values"] == {"a": [1]}
    assert tup.metadata == {"k": 1}
    assert tup.pending_writes == [("task", "a", "w")]


def test_each_cluster_server_record_shares_the_slot_of_the_data_it_vouches_for() -> None:
    records = K.cluster_server_keys("pfx", 4)
    assert [hash_tag(key) for key in records[:-1]] == [f"pfx:s{n}" for n in range(4)]
    assert key_slot(K.utf8(records[-1])) == key_slot(K.utf8(K.registry_key("pfx")))
    assert all(key.startswith("pfx:") for key in records)
    assert len(set(records)) == 5
