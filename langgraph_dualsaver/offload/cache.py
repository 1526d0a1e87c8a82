"""``ChunkCache``: what one process knows of the chunks it wrote or read.

Chunks are immutable and named by the sha256 of their stored bytes, so what is cached
is never stale: the bytes of a chunk (checked against its hash when fetched) and, for a
piece of a value, the chunk it was stored as (by the piece's own sha256 and the zstd
level), so writing the next version of a growing value compresses only its new pieces.
Bounded by bytes, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["ChunkCache", "Stored"]

Stored = tuple[str, int, bool]
"""A piece's chunk: its digest, stored size, and whether it was compressed."""
_PIECES = 65536


class ChunkCache:
    """Chunk bytes (up to ``max_bytes``) and the chunk each piece was stored as."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._raw: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._pieces: OrderedDict[tuple[bytes, int | None], Stored] = OrderedDict()
        self._lock = threading.Lock()

    def raw(self, digest: str) -> bytes | None:
        """A chunk's bytes as the value had them (decompressed), if cached."""
        with self._lock:
            found = self._raw.get(digest)
            if found is not None:
                self._raw.move_to_end(digest)
            return found

    def keep_raw(self, digest: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            if digest in self._raw:
                self._raw.move_to_end(digest)
                return
            self._raw[digest] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, dropped = self._raw.popitem(last=False)
                self._size -= len(dropped)

    def stored_as(self, piece_digest: bytes, level: int | None) -> Stored | None:
        """The chunk ``piece`` (its sha256) was stored as at ``level``, if known."""
        with self._lock:
            found = self._pieces.get((piece_digest, level))
            if found is not None:
                self._pieces.move_to_end((piece_digest, level))
            return found

    def keep_stored(self, piece_digest: bytes, level: int | None, stored: Stored) -> None:
        with self._lock:
            self._pieces[(piece_digest, level)] = stored
            self._pieces.move_to_end((piece_digest, level))
            while len(self._pieces) > _PIECES:
                self._pieces.popitem(last=False)
