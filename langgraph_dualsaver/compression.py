"""Transparent compression of channel values and pending writes, in both tiers.

The saver's serde is wrapped in a ``CompressingSerializer``: the bytes the user's serde
returns are compressed when they are ``min_bytes`` or more and compression makes them
smaller, and the stored type says so (``"msgpack"`` becomes ``"msgpack.zstd"``). Reads
go by the stored type alone, so values stored before compression was turned on read,
and compressed values still read after it is turned off (``compression=None``).

With an ``EncryptedSerializer`` the wrapper goes *inside* it (``with_compression``
places it there whatever the user passed): values are compressed, then encrypted, since
ciphertext does not compress. The marker is a ``.``, not LangGraph's ``+``:
``EncryptedSerializer`` splits its stored type at the first ``+`` to find its cipher.

A value is refused, written or read, if it is over ``Limits.max_value_bytes`` before
compression; a read never inflates more than that (no decompression bombs).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

import zstandard
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

from langgraph_dualsaver.errors import CheckpointTooLargeError, ConfigurationError, DualSaverError

__all__ = [
    "DEFAULT_COMPRESSION",
    "CompressingSerializer",
    "Compression",
    "StoredValueError",
    "StoredValueTooLargeError",
    "compressed_type",
    "compressor",
    "decompressor",
    "uncompressed",
    "uncompressed_size",
    "user_serde",
    "with_compression",
]

Algorithm = Literal["zstd"]
ALGORITHMS: tuple[str, ...] = ("zstd",)
MARK = "."
"""Between the serde's type and the algorithm: ``"msgpack.zstd"``."""
_READ_CHUNK = 1 << 20


class StoredValueError(DualSaverError, ValueError):
    """A stored compressed value does not decompress (truncated, or not a zstd frame)."""


class StoredValueTooLargeError(StoredValueError):
    """A stored value expands past ``Limits.max_value_bytes``; it was not inflated."""


@dataclass(frozen=True, slots=True)
class Compression:
    """How values are compressed before they are stored (``compression=`` of a saver).

    ``min_bytes``: values whose serialized bytes are fewer are stored as they are (small
    values barely shrink, and a frame costs its header). ``level``: zstd's level, 1 (fast)
    to 19; 3 is zstd's own default (see benchmarks/results/compression_choice.md).
    """

    algorithm: Algorithm = "zstd"
    level: int = 3
    min_bytes: int = 1024

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigurationError(
                f"Compression.algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}"
            )
        if isinstance(self.level, bool) or not isinstance(self.level, int):
            raise ConfigurationError(f"Compression.level must be an int, got {self.level!r}")
        if not 1 <= self.level <= 19:
            raise ConfigurationError(f"Compression.level must be 1 to 19, got {self.level}")
        if isinstance(self.min_bytes, bool) or not isinstance(self.min_bytes, int):
            raise ConfigurationError(
                f"Compression.min_bytes must be an int, got {self.min_bytes!r}"
            )
        if self.min_bytes < 0:
            raise ConfigurationError(f"Compression.min_bytes must be >= 0, got {self.min_bytes}")


DEFAULT_COMPRESSION = Compression()


# -- the codec ----------------------------------------------------------------------

_local = threading.local()  # zstd contexts are not thread-safe; one per thread and level


def compressor(level: int) -> zstandard.ZstdCompressor:
    """This thread's zstd compressor at ``level`` (the offload chunks use it too)."""
    found: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    if level not in found:
        found[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return found[level]


def decompressor() -> zstandard.ZstdDecompressor:
    """This thread's zstd decompressor."""
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    decompressor: zstandard.ZstdDecompressor = _local.decompressor
    return decompressor


def _too_large(type_: str, limit: int, size: int | None = None) -> StoredValueTooLargeError:
    expands = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    return StoredValueTooLargeError(
        f"refused to decompress a stored {type_!r} value: it expands to {expands}, over "
        f"the limit of {limit:,} bytes (Limits.max_value_bytes). The savers never write such "
        "a value: it was crafted (a decompression bomb) or written under a larger limit."
    )


def _inflate(type_: str, data: bytes, limit: int) -> bytes:
    """zstd-decompressed ``data``, never more than ``limit`` bytes of it in memory."""
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise StoredValueError(f"a stored {type_!r} value is not a zstd frame: {exc}") from None
    if declared > limit:
        raise _too_large(type_, limit, declared)
    try:
        if declared >= 0:  # the output buffer is the declared size; more fails
            return decompressor().decompress(data)
        return _inflate_unsized(type_, data, limit)  # a frame we did not write
    except zstandard.ZstdError as exc:
        raise StoredValueError(f"a stored {type_!r} value does not decompress: {exc}") from None


def _inflate_unsized(type_: str, data: bytes, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    with decompressor().stream_reader(data) as reader:
        while chunk := reader.read(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_large(type_, limit)
            parts.append(chunk)
    return b"".join(parts)


def compressed_type(type_: str) -> tuple[str, str | None]:
    """``("msgpack", "zstd")`` for ``"msgpack.zstd"``; ``(type_, None)`` if uncompressed."""
    base, mark, algorithm = type_.rpartition(MARK)
    if mark and algorithm in ALGORITHMS:
        return base, algorithm
    return type_, None


def uncompressed(type_: str, data: bytes, limit: int) -> tuple[str, bytes]:
    """A stored ``(type, bytes)`` as the user's serde wrote it."""
    base, algorithm = compressed_type(type_)
    if algorithm is None:
        return type_, data
    return base, _inflate(type_, data, limit)


def uncompressed_size(type_: str, stored: int, head: bytes) -> int | None:
    """Bytes a stored value had before compression, from its size (``stored``) and its
    first 18 bytes (``head``: a zstd frame header at most) alone, for statistics. ``None``
    when they do not tell: an encrypted value (``EncryptedSerializer`` adds ``+cipher``),
    or a frame without its size."""
    if "+" in type_:
        return None
    if compressed_type(type_)[1] is None:
        return stored
    try:
        size = zstandard.frame_content_size(head)
    except zstandard.ZstdError:
        return None
    return size if size >= 0 else None


# -- the serde wrapper ----------------------------------------------------------------


class CompressingSerializer(SerializerProtocol):
    """``inner``'s bytes, compressed per ``compression`` (``None``: only decompresses),
    never more than ``max_bytes`` before compression either way."""

    def __init__(
        self, inner: SerializerProtocol, compression: Compression | None, max_bytes: int
    ) -> None:
        if isinstance(inner, (CompressingSerializer, EncryptedSerializer)):
            raise ConfigurationError(
                "CompressingSerializer wraps the plain serde; use with_compression(), which "
                "puts it inside an EncryptedSerializer"
            )
        self.inner = inner
        self.compression = compression
        self.max_bytes = max_bytes

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        type_, data = self.inner.dumps_typed(obj)
        if len(data) > self.max_bytes:
            raise CheckpointTooLargeError(
                f"serializes to {len(data):,} bytes before compression; the limit is "
                f"{self.max_bytes:,} (Limits.max_value_bytes)"
            )
        settings = self.compression
        if settings is None or len(data) < settings.min_bytes or not data:
            return type_, data
        packed = compressor(settings.level).compress(data)
        if len(packed) >= len(data):  # already compressed or encrypted: kept as it is
            return type_, data
        return f"{type_}{MARK}{settings.algorithm}", packed

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        return self.inner.loads_typed(uncompressed(*data, self.max_bytes))


def user_serde(serde: SerializerProtocol) -> SerializerProtocol:
    """The serde as the user gave it, without the compression ``with_compression`` added."""
    if isinstance(serde, CompressingSerializer):
        return serde.inner
    if isinstance(serde, EncryptedSerializer) and isinstance(serde.serde, CompressingSerializer):
        return EncryptedSerializer(serde.cipher, serde.serde.inner)
    return serde


def with_compression(
    serde: SerializerProtocol, compression: Compression | None, max_bytes: int
) -> SerializerProtocol:
    """``serde`` with compression where it belongs: around a plain serde, inside an
    ``EncryptedSerializer`` (compressed, then encrypted). Idempotent: a serde this
    returned gets the new settings, not a second wrapper."""
    serde = user_serde(serde)
    if isinstance(serde, EncryptedSerializer):
        return EncryptedSerializer(
            serde.cipher, CompressingSerializer(serde.serde, compression, max_bytes)
        )
    return CompressingSerializer(serde, compression, max_bytes)
