"""The whole Redis key layout, and how values are encoded in it. Pure: no I/O.

Every key of a thread carries the hash tag of the thread's *shard*, not of the thread,
so a thread's keys and its shard's outbox stream live in one Redis Cluster slot and
one Lua script can write them all atomically::

    <prefix>:{<prefix>:s<shard>}:threads              ZSET  registry: thread_id -> last write (s)
    <prefix>:threads                                  ZSET  the registry of earlier versions
    <prefix>:server                                   STRING  run_id the data is good on
    <prefix>:{<prefix>:s<shard>}:server               STRING  the same, per shard (Cluster)
    <prefix>:{<prefix>:threads}:server                STRING  the same, registry's slot (Cluster)
    <prefix>:{<prefix>:s<shard>}:outbox               STREAM  records queued for PostgreSQL
    <prefix>:{<prefix>:s<shard>}:dead                 STREAM  dead letters
    <prefix>:{<prefix>:s<shard>}:<digest>:meta        HASH  thread_id, pending, c/b/w key flags
    <prefix>:{<prefix>:s<shard>}:<digest>:cp          HASH  cp field -> stored checkpoint
    <prefix>:{<prefix>:s<shard>}:<digest>:idx         ZSET  cp field, score 0 (lex = time)
    <prefix>:{<prefix>:s<shard>}:<digest>:blobs       HASH  blob field -> stored blob
    <prefix>:{<prefix>:s<shard>}:<digest>:writes      ZSET  one member per write, score 0 (below)

``shard = int(sha256(thread_id)[:8], 16) % shards`` and ``digest`` is the sha256 hex
of the UTF-8 thread_id, so any string (``*``, ``{x}``, ``a:b``, 1 MB of text) gives a
short, fixed-shape key that no other thread can address and that is never a pattern.
The thread_id itself is stored in the meta hash and checked on every access.

Fields are length-prefixed with msgpack raw headers, so no two values alias
(``"a:b"`` + ``"c"`` vs ``"a"`` + ``"b:c"``): a cp field is ``lp(ns) + checkpoint_id``,
a blob field ``lp(ns) + lp(channel) + version``. The index holds cp fields with score 0,
so the latest checkpoint of a namespace is one ``ZRANGE BYLEX REV LIMIT 0 1`` over the
``lp(ns)`` prefix (UTF-8 never contains byte 0xFF, which closes the range).

Pending writes are one member each, ``write_key + encode_write(write)``: the key is the
cp field, a NUL, then the write's task_id and idx (its own msgpack elements, which the
Lua scripts copy out of the encoded write). Ids hold no NUL, so the NUL closes the cp
field: a checkpoint's writes are one ``ZRANGE BYLEX`` (``writes_range``: a key goes on
with a msgpack str header, never 0xFF), and a ``(task_id, idx)`` is the range over its
key (an encoded write starts with 0x96), which the write rules keep to one member. So
storing a write is O(log n) however many its checkpoint has. (The old layout kept a
HASH, cp field -> the encoded writes concatenated; the scripts rewrite it on first use.)
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.serde.base import SerializerProtocol

from langgraph_dualsaver.errors import ConfigurationError
from langgraph_dualsaver.records import (
    EMPTY_TYPE,
    BlobRecord,
    CheckpointRecord,
    StoredWrite,
    WritesRecord,
    checkpoint_config,
    decode_checkpoint,
    decode_metadata,
    load_blobs,
    load_writes,
    metadata_matches,
    record_versions,
    resolve_writes,
    version_key,
    where,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_SHARDS",
    "EMPTY_BLOB",
    "REGISTRY_GRACE_S",
    "StoredCheckpoint",
    "ThreadKeys",
    "blob_field",
    "checkpoint_tuple",
    "chunks",
    "cluster_server_keys",
    "copied_records",
    "cp_field",
    "dead_letter_key",
    "decode_blob",
    "decode_stored_checkpoint",
    "decode_write_members",
    "decode_writes_log",
    "encode_blob",
    "encode_stored_checkpoint",
    "encode_write",
    "latest_range",
    "ns_prefix",
    "outbox_key",
    "pairs",
    "registry_key",
    "shard_base",
    "shard_of",
    "shard_registry_key",
    "shard_tag",
    "split_blob_field",
    "split_cp_field",
    "split_write_member",
    "stored_metadata_matches",
    "text",
    "thread_digest",
    "thread_keys",
    "utf8",
    "validate_prefix",
    "write_key",
    "write_member",
    "writes_range",
]

DEFAULT_PREFIX = "dualsaver"
DEFAULT_SHARDS = 16
REGISTRY_GRACE_S = 60.0
"""A registry member is only forgotten when its last write is older than this, so a
thread being created right now (in Redis Cluster its ZADD may land first) is kept."""


# -- names ------------------------------------------------------------------------


def utf8(value: str) -> bytes:
    """UTF-8 bytes of an id; lone surrogates pass through rather than fail."""
    return value.encode("utf-8", "surrogatepass")


def validate_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not prefix:
        raise ConfigurationError(f"prefix must be a non-empty string, got {prefix!r}")
    for bad in ("{", "}", "\x00"):
        if bad in prefix:
            raise ConfigurationError(
                f"prefix {prefix!r} contains {bad!r}, which would break the Redis Cluster "
                "hash tags; use letters, digits, '-', '_', '.' or ':'"
            )
    return prefix


def thread_digest(thread_id: str) -> str:
    return hashlib.sha256(utf8(thread_id)).hexdigest()


def shard_of(thread_id: str, shards: int) -> int:
    return int(thread_digest(thread_id)[:8], 16) % shards


def shard_tag(prefix: str, shard: int) -> str:
    return "{" + f"{prefix}:s{shard}" + "}"


def shard_base(prefix: str, shard: int) -> str:
    return f"{prefix}:{shard_tag(prefix, shard)}"


def outbox_key(prefix: str, shard: int) -> str:
    return f"{shard_base(prefix, shard)}:outbox"


def dead_letter_key(prefix: str, shard: int) -> str:
    return f"{shard_base(prefix, shard)}:dead"


def registry_key(prefix: str) -> str:
    """The one registry of earlier versions (read, then emptied, by ``list(None)``)."""
    return f"{prefix}:threads"


def shard_registry_key(prefix: str, shard: int) -> str:
    """A shard's registry of threads: in the shard's slot, so the script that writes a
    thread registers it too (one round trip per put)."""
    return f"{shard_base(prefix, shard)}:threads"


def server_key(prefix: str) -> str:
    """The ``run_id`` of the server the hot data was last known good on. A restart
    (say, from an old snapshot) changes the run_id, so a mismatch means: distrust."""
    return f"{prefix}:server"


def cluster_server_keys(prefix: str, shards: int) -> list[str]:
    """On Redis Cluster, one ``server_key`` in each slot holding this prefix's data (each
    shard's, then the registry's), so each lives on the master whose ``run_id`` it records."""
    return [f"{shard_base(prefix, shard)}:server" for shard in range(shards)] + [
        f"{prefix}:{{{registry_key(prefix)}}}:server"
    ]


@dataclass(frozen=True, slots=True)
class ThreadKeys:
    """The keys of one thread, in the order every Lua script takes them (KEYS[1..7])."""

    meta: str
    cp: str
    idx: str
    blobs: str
    writes: str
    outbox: str
    registry: str
    shard: int

    @property
    def data(self) -> list[str]:
        """The thread's own keys, which expire together."""
        return [self.meta, self.cp, self.idx, self.blobs, self.writes]

    @property
    def all(self) -> list[str]:
        """The thread's keys, its shard's outbox stream and its shard's registry."""
        return [*self.data, self.outbox, self.registry]


@functools.lru_cache(maxsize=8192)
def thread_keys(prefix: str, shards: int, thread_id: str) -> ThreadKeys:
    """Cached: a put names its thread's keys several times, each a sha256 otherwise."""
    digest = thread_digest(thread_id)
    shard = int(digest[:8], 16) % shards
    base = f"{shard_base(prefix, shard)}:{digest}"
    return ThreadKeys(
        meta=f"{base}:meta",
        cp=f"{base}:cp",
        idx=f"{base}:idx",
        blobs=f"{base}:blobs",
        writes=f"{base}:writes",
        outbox=outbox_key(prefix, shard),
        registry=shard_registry_key(prefix, shard),
        shard=shard,
    )


# -- fields -----------------------------------------------------------------------


def _lp(data: bytes) -> bytes:
    """``data`` with a msgpack raw header: canonical and self-delimiting."""
    packed: bytes = msgpack.packb(data, use_bin_type=False)
    return packed


@functools.lru_cache(maxsize=4096)
def _lp_text(text: str) -> bytes:
    """``_lp`` of a namespace or channel name. Cached: a graph has few of each, and
    every put names them all (profiled: 9 % of a write_behind put's client CPU)."""
    return _lp(utf8(text))


def ns_prefix(checkpoint_ns: str) -> bytes:
    """The prefix shared by every cp field of one namespace (and only of it)."""
    return _lp_text(checkpoint_ns)


def cp_field(checkpoint_ns: str, checkpoint_id: str) -> bytes:
    return ns_prefix(checkpoint_ns) + utf8(checkpoint_id)


def split_cp_field(field: bytes) -> tuple[str, str]:
    """``(checkpoint_ns, checkpoint_id)`` of a cp field."""
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(field)
    ns = unpacker.unpack()
    rest = field[unpacker.tell() :]
    return ns.decode("utf-8", "surrogatepass"), rest.decode("utf-8", "surrogatepass")


@functools.lru_cache(maxsize=65536)
def blob_field(checkpoint_ns: str, channel: str, version: str) -> bytes:
    """Cached: every put names the blob of every channel, and most channels keep their
    version from one step to the next."""
    return _lp_text(checkpoint_ns) + _lp_text(channel) + utf8(version)


def split_blob_field(field: bytes) -> tuple[str, str, str]:
    """``(checkpoint_ns, channel, version)`` of a blob field."""
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(field)
    ns = unpacker.unpack()
    channel = unpacker.unpack()
    rest = field[unpacker.tell() :]
    return tuple(part.decode("utf-8", "surrogatepass") for part in (ns, channel, rest))  # type: ignore[return-value]


def latest_range(checkpoint_ns: str, before: str | None = None) -> tuple[bytes, bytes]:
    """``(max, min)`` for ``ZRANGE idx max min BYLEX REV``: the namespace's checkpoints,
    newest first, optionally only those older than ``before``."""
    prefix = ns_prefix(checkpoint_ns)
    upper = b"(" + prefix + (utf8(before) if before is not None else b"\xff")
    return upper, b"[" + prefix


# -- values -----------------------------------------------------------------------


def encode_blob(blob: BlobRecord) -> bytes:
    packed: bytes = msgpack.packb([blob.type, blob.data], use_bin_type=True)
    return packed


def decode_blob(data: bytes) -> tuple[str, bytes | None]:
    type_, value = msgpack.unpackb(data, raw=False)
    return type_, value


EMPTY_BLOB = encode_blob(BlobRecord("", "", EMPTY_TYPE, None))
"""A cleared channel's stored blob; the Lua scripts compare against these bytes."""


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint as the cp hash holds it: msgpack in the old raw-only format, which
    Lua's ``cmsgpack`` reads, so scripts can follow parents and find blob fields."""

    checkpoint: bytes
    metadata: bytes
    parent_id: str | None
    channels: tuple[str, ...]
    blob_fields: tuple[bytes, ...]


def encode_stored_checkpoint(record: CheckpointRecord) -> bytes:
    versions = record_versions(record)
    channels = [str(ch) for ch in versions]
    fields = [
        blob_field(record.checkpoint_ns, str(ch), version_key(v)) for ch, v in versions.items()
    ]
    packed: bytes = msgpack.packb(
        [
            record.checkpoint,
            record.metadata,
            utf8(record.parent_checkpoint_id or ""),
            [utf8(ch) for ch in channels],
            fields,
        ],
        use_bin_type=False,
    )
    return packed


def decode_stored_checkpoint(data: bytes) -> StoredCheckpoint:
    checkpoint, metadata, parent, channels, fields = msgpack.unpackb(data, raw=True)
    return StoredCheckpoint(
        checkpoint=checkpoint,
        metadata=metadata,
        parent_id=parent.decode("utf-8", "surrogatepass") or None,
        channels=tuple(ch.decode("utf-8", "surrogatepass") for ch in channels),
        blob_fields=tuple(fields),
    )


def stored_metadata_matches(stored: bytes, filter: Mapping[str, Any]) -> bool:
    """Whether a stored checkpoint's metadata contains ``filter`` (JSONB ``@>``)."""
    return metadata_matches(decode_metadata(decode_stored_checkpoint(stored).metadata), filter)


def checkpoint_tuple(
    serde: SerializerProtocol,
    thread_id: str,
    field: bytes,
    stored: bytes,
    writes: Sequence[bytes],
    blobs: Mapping[bytes, bytes],
) -> CheckpointTuple:
    """The ``CheckpointTuple`` of a stored checkpoint, given the stored blobs it names
    (``blob field -> stored blob``) and its writes' members."""
    ns, checkpoint_id = split_cp_field(field)
    entry = decode_stored_checkpoint(stored)
    checkpoint = decode_checkpoint(entry.checkpoint, {})
    versions = checkpoint.get("channel_versions") or {}
    found = {
        (ch, version_key(versions[ch])): decode_blob(blobs[bf])
        for ch, bf in zip(entry.channels, entry.blob_fields, strict=True)
        if bf in blobs and ch in versions
    }
    at = where(thread_id, ns, checkpoint_id)
    checkpoint["channel_values"] = load_blobs(serde, versions, found, at=at)
    return CheckpointTuple(
        config=checkpoint_config(thread_id, ns, checkpoint_id),
        checkpoint=checkpoint,
        metadata=decode_metadata(entry.metadata),
        parent_config=(
            checkpoint_config(thread_id, ns, entry.parent_id) if entry.parent_id else None
        ),
        pending_writes=load_writes(
            serde, resolve_writes(decode_write_members(field, writes)), at=at
        ),
    )


def encode_write(write: StoredWrite) -> bytes:
    """One write as STORE takes it and a writes member ends with."""
    packed: bytes = msgpack.packb(
        [write.task_id, write.task_path, write.idx, write.channel, write.type, write.data],
        use_bin_type=True,
    )
    return packed


def write_key(cp: bytes, write: StoredWrite) -> bytes:
    """The key a write's member starts with, as the Lua scripts derive it from
    ``encode_write(write)``: one per ``(checkpoint, task_id, idx)``."""
    task_id: bytes = msgpack.packb(write.task_id, use_bin_type=True)
    idx: bytes = msgpack.packb(write.idx)
    return cp + b"\0" + task_id + idx


def write_member(cp: bytes, write: StoredWrite) -> bytes:
    """A write as the writes ZSET holds it."""
    return write_key(cp, write) + encode_write(write)


def writes_range(cp: bytes) -> tuple[bytes, bytes]:
    """``(min, max)`` for ``ZRANGE writes min max BYLEX``: one checkpoint's writes."""
    return b"[" + cp + b"\0", b"(" + cp + b"\0\xff"


def _write_after(member: bytes, start: int) -> StoredWrite:
    """The write of a member whose key's task_id element begins at ``start``."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(member))
    unpacker.feed(member[start:])
    unpacker.skip()  # task_id and idx: the write repeats them
    unpacker.skip()
    return StoredWrite(*unpacker.unpack())


def decode_write_members(cp: bytes, members: Iterable[bytes]) -> list[StoredWrite]:
    """The writes of checkpoint ``cp``'s members (resolve and sort them with
    ``records.resolve_writes``)."""
    return [_write_after(member, len(cp) + 1) for member in members]


def split_write_member(member: bytes) -> tuple[bytes, StoredWrite]:
    """``(cp field, write)`` of any member of the writes ZSET."""
    unpacker = msgpack.Unpacker(raw=True, max_buffer_size=len(member))
    unpacker.feed(member)
    unpacker.skip()  # lp(ns); the checkpoint_id after it holds no NUL
    end = member.index(b"\0", unpacker.tell())
    return member[:end], _write_after(member, end + 1)


def decode_writes_log(log: bytes | None) -> list[StoredWrite]:
    """Encoded writes, concatenated (the old layout's log), in order."""
    if not log:
        return []
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(log) + 1)
    unpacker.feed(log)
    return [StoredWrite(*entry) for entry in unpacker]


def copied_records(
    target: str,
    checkpoints: Mapping[bytes, bytes],
    blobs: Mapping[bytes, bytes],
    write_members: Iterable[bytes],
) -> list[CheckpointRecord | WritesRecord]:
    """A thread's stored contents (its cp and blobs hashes, its writes' members) as
    records of ``target``, oldest first. Each blob travels with the first checkpoint
    that references it, each checkpoint's writes after it, so a reader of the queued
    copy never finds a checkpoint before its blobs."""
    writes: dict[bytes, list[StoredWrite]] = {}
    for member in write_members:
        field, write = split_write_member(member)
        writes.setdefault(field, []).append(write)
    sent: set[bytes] = set()
    records: list[CheckpointRecord | WritesRecord] = []
    for field in sorted(checkpoints, key=lambda f: split_cp_field(f)[::-1]):
        ns, checkpoint_id = split_cp_field(field)
        entry = decode_stored_checkpoint(checkpoints[field])
        carried = []
        for bf in entry.blob_fields:
            if bf in blobs and bf not in sent:
                sent.add(bf)
                _, channel, version = split_blob_field(bf)
                carried.append(BlobRecord(channel, version, *decode_blob(blobs[bf])))
        records.append(
            CheckpointRecord(
                target, ns, checkpoint_id, entry.parent_id, entry.checkpoint, entry.metadata,
                tuple(carried),
            )
        )  # fmt: skip
        if field in writes:
            records.append(WritesRecord(target, ns, checkpoint_id, tuple(writes[field])))
    return records


def text(value: bytes | str) -> str:
    """A Redis reply as ``str`` (UTF-8, as every key part and id is written)."""
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value


def pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A flat ``[field, value, ...]`` reply (HGETALL, script results) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def chunks(items: Sequence[Any] | Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last one shorter), for pipelines and scripts."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
