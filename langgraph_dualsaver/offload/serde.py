"""The serde wrapper that offloads: outermost, around compression (and encryption), so
the size compared with ``Offload.min_bytes`` is the size that would be stored, and an
encrypted value goes to the object store encrypted.

Two ways to store a large value, chosen per value:

- chunked (``Offload.chunk_bytes`` set, the default, and no ``EncryptedSerializer``):
  the user's serde's bytes, when they are ``min_bytes`` or more, are cut by content and
  each chunk is compressed and stored once (``offload.chunks``); the tiers keep the list
  of chunks with the stored type ``<type>.chunks``. Consecutive versions of a growing
  value share all but about two chunks.
- whole: the stored bytes (compressed, and encrypted), when they are ``min_bytes`` or
  more, are one object (``Offload.put``: durable before it returns) and the tiers keep
  ``sha256:<hex>:<size>`` with the stored type ``<type>.offload``: ``"msgpack.zstd"``
  becomes ``"msgpack.zstd.offload"``. Always so under an ``EncryptedSerializer``: it
  encrypts each value with a fresh nonce, so two versions share no bytes and chunks
  of ciphertext would never dedupe; chunking the plaintext before encryption would
  store it unencrypted. Encrypted values keep their whole-value offload.

Reads go by the type alone, so values stored in the tiers read whatever the setting is, and a
reference reads as long as the saver has an ``Offload`` for its store
(``Offload.read_only`` to stop offloading new values).

Sync, not an async pass in the savers: the serde is where both tiers and the chain
already turn values into bytes, one place for every write and read path (put,
put_writes, get, list, audit, DeltaChannel history), and the chain carries the
reference from Redis to PostgreSQL untouched. The price: a put or a read that moves
an offloaded value blocks its event loop for the store's latency (an fsync locally, a
PUT or GET on S3), only for values of ``min_bytes`` or more, which are rare and large
(their serialization and compression already block it for comparable time).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

from langgraph_dualsaver.compression import (
    CompressingSerializer,
    Compression,
    StoredValueError,
    StoredValueTooLargeError,
)
from langgraph_dualsaver.errors import CheckpointTooLargeError, ConfigurationError
from langgraph_dualsaver.offload.chunks import (
    CHUNKS,
    ChunkRef,
    cut,
    pack,
    parse_chunks,
    render_chunks,
    unpack,
)
from langgraph_dualsaver.offload.store import Offload

__all__ = [
    "MARK",
    "REFERENCE",
    "OffloadNotConfiguredError",
    "OffloadedValueMissingError",
    "OffloadingSerializer",
    "is_offloaded",
    "parse_reference",
    "reference",
    "with_offload",
    "without_offload",
]

MARK = ".offload"
"""After the stored type of an offloaded value: ``"msgpack.zstd.offload"``."""
REFERENCE = re.compile(rb"sha256:([0-9a-f]{64}):([0-9]{1,12})")
"""A reference, wherever it is found (``gc`` looks for it in raw records)."""


class OffloadedValueMissingError(StoredValueError):
    """A stored reference names an object the object store does not hold."""


class OffloadNotConfiguredError(StoredValueError):
    """A stored value was offloaded, and this saver has no ``Offload`` to read it from."""


def is_offloaded(type_: str) -> bool:
    """A stored reference to the object store, whole (``.offload``) or chunked."""
    return type_.endswith(MARK) or type_.endswith(CHUNKS)


class _Serialized(SerializerProtocol):
    """Bytes already serialized, handed to ``CompressingSerializer`` as its serde."""

    def __init__(self, type_: str, data: bytes) -> None:
        self.found = (type_, data)

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return self.found

    def loads_typed(self, data: tuple[str, bytes]) -> Any:  # pragma: no cover - unused
        raise NotImplementedError


def reference(digest: str, size: int) -> bytes:
    return f"sha256:{digest}:{size}".encode()


def parse_reference(data: bytes) -> tuple[str, int]:
    """``(digest, size)`` of a stored reference."""
    found = REFERENCE.fullmatch(data)
    if found is None:
        raise StoredValueError(f"not an offload reference: {data[:80]!r}")
    return found.group(1).decode(), int(found.group(2))


def not_configured(type_: str) -> OffloadNotConfiguredError:
    return OffloadNotConfiguredError(
        f"a stored {type_!r} value is a reference to an object store, and this saver has "
        "no offload: pass offload=Offload(url) (Offload.read_only(url) to read without "
        "offloading new values) with the store it was written to"
    )


class OffloadingSerializer(SerializerProtocol):
    """``inner``'s bytes, moved to ``offload``'s store when they are ``min_bytes`` or
    more; references resolved on read, never more than ``max_bytes`` of them."""

    resolves_offloaded = True

    def __init__(self, inner: SerializerProtocol, offload: Offload, max_bytes: int) -> None:
        self.inner = inner
        self.offload = offload
        self.max_bytes = max_bytes

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if self.offload.chunk_bytes is not None and isinstance(self.inner, CompressingSerializer):
            return self._dumps_chunked(self.inner, obj)
        type_, data = self.inner.dumps_typed(obj)
        if len(data) < self.offload.min_bytes:
            return type_, data
        digest = self.offload.put(data)
        return f"{type_}{MARK}", reference(digest, len(data))

    def _dumps_chunked(self, compressing: CompressingSerializer, obj: Any) -> tuple[str, bytes]:
        type_, data = compressing.inner.dumps_typed(obj)
        if len(data) < self.offload.min_bytes:  # compressed as the saver would have
            small = CompressingSerializer(
                _Serialized(type_, data), compressing.compression, compressing.max_bytes
            )
            return small.dumps_typed(obj)
        if len(data) > compressing.max_bytes:
            raise CheckpointTooLargeError(
                f"serializes to {len(data):,} bytes before compression; the limit is "
                f"{compressing.max_bytes:,} (Limits.max_value_bytes)"
            )
        assert self.offload.chunk_bytes is not None
        level = _zstd_level(compressing.compression)
        cache = self.offload.chunk_cache
        refs: list[ChunkRef] = []
        todo: dict[str, bytes] = {}
        for piece in cut(data, self.offload.chunk_bytes):
            piece_digest = hashlib.sha256(piece).digest()
            known = cache.stored_as(piece_digest, level)
            if known is not None and self.offload.remembered_fresh(known[0]):
                refs.append(ChunkRef(known[0], known[1], len(piece), known[2]))
                continue  # written (or seen fresh) by this process: no compression, no call
            stored, compressed = pack(piece, level)
            digest = hashlib.sha256(stored).hexdigest()
            todo[digest] = stored
            refs.append(ChunkRef(digest, len(stored), len(piece), compressed))
            cache.keep_stored(piece_digest, level, (digest, len(stored), compressed))
            cache.keep_raw(digest, bytes(piece))
        self.offload.store_chunks(todo)
        return f"{type_}{CHUNKS}", render_chunks(refs)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        type_, stored = data
        if type_.endswith(CHUNKS):
            found = self.fetch_chunks(type_, stored)
            return self.inner.loads_typed((type_.removesuffix(CHUNKS), found))
        if not is_offloaded(type_):
            return self.inner.loads_typed(data)
        return self.inner.loads_typed((type_.removesuffix(MARK), self.fetch(type_, stored)))

    def fetch_chunks(self, type_: str, stored: bytes) -> bytes:
        """The bytes a chunked reference lists, each chunk checked against its hash."""
        refs = parse_chunks(stored, self.max_bytes, type_)
        cache = self.offload.chunk_cache
        cached = {r.digest: hit for r in refs if (hit := cache.raw(r.digest)) is not None}
        wanted = list(dict.fromkeys(r.digest for r in refs if r.digest not in cached))
        fetched = dict(zip(wanted, self.offload.get_chunks(wanted), strict=True))
        parts = []
        for ref in refs:
            if ref.digest in cached:
                parts.append(cached[ref.digest])
                continue
            chunk = fetched[ref.digest]
            if chunk is None:
                raise OffloadedValueMissingError(
                    f"chunk sha256:{ref.digest} ({ref.stored:,} bytes) of an offloaded "
                    f"value is missing from {self.offload.url}: it was deleted, or this is "
                    "not the store it was written to"
                )
            if len(chunk) != ref.stored or hashlib.sha256(chunk).hexdigest() != ref.digest:
                raise StoredValueError(
                    f"chunk sha256:{ref.digest} in {self.offload.url} does not match its "
                    "hash: the object was altered"
                )
            raw = unpack(ref, chunk)
            cache.keep_raw(ref.digest, raw)
            parts.append(raw)
        return b"".join(parts)

    def fetch(self, type_: str, stored: bytes) -> bytes:
        """The bytes a reference names, checked against its size and hash."""
        digest, size = parse_reference(stored)
        if size > self.max_bytes:
            raise StoredValueTooLargeError(
                f"refused to read an offloaded {type_!r} value of {size:,} bytes, over the "
                f"limit of {self.max_bytes:,} bytes (Limits.max_value_bytes)"
            )
        found = self.offload.get(digest)
        if found is None:
            raise OffloadedValueMissingError(
                f"the offloaded value sha256:{digest} ({size:,} bytes) is missing from "
                f"{self.offload.url}: it was deleted, or this is not the store it was "
                "written to"
            )
        if len(found) != size or hashlib.sha256(found).hexdigest() != digest:
            raise StoredValueError(
                f"the offloaded value sha256:{digest} in {self.offload.url} does not match "
                "its hash: the object was altered"
            )
        return found


def _zstd_level(compression: Compression | None) -> int | None:
    return None if compression is None else compression.level


def without_offload(serde: SerializerProtocol) -> SerializerProtocol:
    """The serde under the offload wrapper (``serde`` itself if it has none)."""
    return serde.inner if isinstance(serde, OffloadingSerializer) else serde


def with_offload(
    serde: SerializerProtocol, offload: Offload | None, max_bytes: int
) -> SerializerProtocol:
    """``serde`` (without any offload wrapper it had) wrapped for ``offload``; as it is
    for ``None``, so a saver without offload has exactly the serde it always had."""
    serde = without_offload(serde)
    if offload is None:
        return serde
    if not isinstance(offload, Offload):
        raise ConfigurationError(f"offload must be an Offload or None, got {offload!r}")
    return OffloadingSerializer(serde, offload, max_bytes)
