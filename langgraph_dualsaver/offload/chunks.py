"""Chunked offload: a large value cut by content, each chunk stored once.

LangGraph stores a channel's whole value again in every checkpoint that changes it, so
a growing message list is written once per step, a little longer each time: stored
whole, its history grows with the square of its length. Cut with content-defined
chunking (FastCDC, ``pyfastcdc``), consecutive versions share every chunk but the
first (a list's length is in its header) and the last (where the new message is): a
step stores about two new chunks, and the history grows linearly.

Each chunk is compressed on its own (the saver's ``Compression``; stored as it is when
that does not shrink it) and stored under the sha256 of its stored bytes
(``Offload.put_chunks``: durable before the reference is returned). The tiers keep the
reference this module writes, with the stored type ``<type>.chunks``::

    chunks 1 <size> <count>
    sha256:<hex>:<stored size>:<size> <z|->     one line per chunk, in order

``z``: zstd-compressed. ``gc`` marks every ``sha256:<hex>:<size>`` it finds, so each
chunk of a reference is marked with no decoding.

Measured on the big-state workload (500 versions of a msgpack message list growing by
1 KB to 591 KB, and a 2 MiB JSON tool output), pyfastcdc 0.3.1 on 2 cores: every
version stored whole and zstd-compressed is 43.8 MB; chunked with an average of
8 / 16 / 32 / 64 KiB, 4.6 / 5.7 / 14.6 / 18.6 MB in 1,038 / 1,011 / 958 / 954 chunks,
with 57 / 29 / 12 / 7 chunks per 591 KB version; the tool output compresses to 0.84 /
0.79 / 0.75 / 0.72 MB chunked against 0.62 MB whole. 16 KiB is the default: about as
small as 8 KiB's history at half its chunks per value. Cutting 2 MiB takes 1-2 ms.
``fastcdc`` 1.7 (the other FastCDC on the package index) stored a little less at 8-32
KiB but cut 1.5-2.5 times slower, and is untyped and unreleased since 2024.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import zstandard
from pyfastcdc import FastCDC

from langgraph_dualsaver.compression import (
    StoredValueError,
    StoredValueTooLargeError,
    compressor,
    decompressor,
)

__all__ = [
    "CHUNKS",
    "ChunkRef",
    "cut",
    "pack",
    "parse_chunks",
    "render_chunks",
    "unpack",
]

CHUNKS = ".chunks"
"""After the user's serde's type of a chunked value: ``"msgpack.chunks"``."""
_HEADER = re.compile(rb"chunks 1 ([0-9]{1,12}) ([0-9]{1,9})")
_LINE = re.compile(rb"sha256:([0-9a-f]{64}):([0-9]{1,12}):([0-9]{1,12}) ([z-])")
_COMPRESSED = "z"


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk of a reference: its digest, stored size, size before compression."""

    digest: str
    stored: int
    size: int
    compressed: bool


def cut(data: bytes, average: int) -> list[memoryview]:
    """``data`` cut by content; the same bytes cut the same way in any process.

    pyfastcdc's defaults around ``average``: chunks of ``average / 4`` to ``4 * average``
    bytes (its actual mean is about ``1.25 * average``)."""
    view = memoryview(data)
    return [view[c.offset : c.offset + c.length] for c in FastCDC(average).cut_buf(view)]


def pack(chunk: memoryview, level: int | None) -> tuple[bytes, bool]:
    """A chunk's stored bytes: zstd at ``level`` (``None``: not compressed) when that is
    smaller, else as it is; and whether it was compressed."""
    raw = bytes(chunk)
    if level is None:
        return raw, False
    packed = compressor(level).compress(raw)
    return (packed, True) if len(packed) < len(raw) else (raw, False)


def unpack(ref: ChunkRef, stored: bytes) -> bytes:
    """A chunk's bytes from its stored bytes (already checked against its hash)."""
    if not ref.compressed:
        data = stored
    else:
        try:
            if zstandard.frame_content_size(stored) != ref.size:
                raise StoredValueError(f"chunk sha256:{ref.digest} declares another size")
            data = decompressor().decompress(stored)
        except zstandard.ZstdError as exc:
            raise StoredValueError(
                f"chunk sha256:{ref.digest} does not decompress: {exc}"
            ) from None
    if len(data) != ref.size:
        raise StoredValueError(f"chunk sha256:{ref.digest} is {len(data)} bytes, not {ref.size}")
    return data


def render_chunks(refs: Sequence[ChunkRef]) -> bytes:
    """The reference the tiers keep for a chunked value."""
    total = sum(r.size for r in refs)
    lines = [f"chunks 1 {total} {len(refs)}"]
    lines += [
        f"sha256:{r.digest}:{r.stored}:{r.size} {_COMPRESSED if r.compressed else '-'}"
        for r in refs
    ]
    return "\n".join(lines).encode()


def parse_chunks(data: bytes, max_bytes: int, type_: str) -> list[ChunkRef]:
    """The chunks a stored reference lists; refused, before anything is fetched, if the
    value is over ``max_bytes`` (``Limits.max_value_bytes``)."""
    header, _, rest = data.partition(b"\n")
    found = _HEADER.fullmatch(header)
    if found is None:
        raise StoredValueError(f"not a chunked reference: {data[:80]!r}")
    size, count = int(found.group(1)), int(found.group(2))
    if size > max_bytes:
        raise StoredValueTooLargeError(
            f"refused to read a chunked {type_!r} value of {size:,} bytes, over the limit "
            f"of {max_bytes:,} bytes (Limits.max_value_bytes)"
        )
    refs = []
    for line in rest.split(b"\n") if rest else []:
        item = _LINE.fullmatch(line)
        if item is None:
            raise StoredValueError(f"a chunked reference has a bad line: {line[:100]!r}")
        refs.append(
            ChunkRef(
                item.group(1).decode(),
                int(item.group(2)),
                int(item.group(3)),
                item.group(4) == b"z",
            )
        )
    if len(refs) != count or sum(r.size for r in refs) != size:
        raise StoredValueError(
            f"a chunked reference lists {len(refs)} chunks of {sum(r.size for r in refs):,} "
            f"bytes, not the {count} of {size:,} bytes its header says"
        )
    return refs
