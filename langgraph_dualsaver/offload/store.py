"""``Offload``: where large values go (a local directory or an S3 bucket, through
``obstore``), and the object operations the serde wrapper and ``gc`` need.

An object's key is its content hash, ``sha256/<2 hex>/<64 hex>``, so the same bytes are
one object whichever thread wrote them. ``put`` returns only once the object is durable:
on S3 a PUT is acknowledged after it is stored; in a local directory the file and the
directories naming it are fsynced. Writing a hash that exists writes it again (S3) or
touches it (local), so its modification time says "referenced recently" and ``gc``'s
grace period protects a value whose record is being written right now.

Chunks of a chunked value (``offload.chunks``) live beside them under
``chunks/<2 hex>/<64 hex>``, also named by the sha256 of their (stored) bytes. A chunk
that exists and was written or refreshed less than ``refresh_after`` ago is not written
again (``put_chunks``); ``gc`` gives chunks ``refresh_after`` more than its grace, so
skipping one is as safe as refreshing it.

Calls block: they run inside the serde (see ``offload.serde`` for why).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import obstore
from obstore.exceptions import BaseError as ObjectStoreError
from obstore.exceptions import NotFoundError
from obstore.store import LocalStore, S3Store

from langgraph_dualsaver.errors import ConfigurationError, DualSaverError
from langgraph_dualsaver.offload.cache import ChunkCache

__all__ = [
    "CHUNK_ROOT",
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MIN_BYTES",
    "DEFAULT_REFRESH_AFTER",
    "NEVER",
    "ROOT",
    "ObjectStoreUnavailableError",
    "Offload",
    "StoredObject",
    "chunk_key",
    "env_offload",
    "object_key",
]

DEFAULT_MIN_BYTES = 256 * 1024
NEVER = 1 << 62
"""``min_bytes`` of ``Offload.read_only``: no value is that large."""
ROOT = "sha256"
"""Every whole value's key starts here."""
CHUNK_ROOT = "chunks"
"""Every chunk's key starts here; nothing but these two roots under the URL is touched."""
DEFAULT_CHUNK_BYTES = 16 * 1024
"""The chunker's average (see ``offload.chunks`` for the measurement behind it)."""
DEFAULT_REFRESH_AFTER = timedelta(minutes=15)
"""A quarter of ``gc``'s default grace (one hour)."""
_FRESH_CACHE = 65536
"""Chunks this process wrote or saw fresh, remembered so a put asks the store nothing."""
CHUNK_CACHE_BYTES = 64 * 1024 * 1024
"""Memory for the chunks an ``Offload`` wrote or read, so a step that reads the value the
last one wrote fetches and decompresses only its new chunks."""
_WORKERS = 8
"""Concurrent chunk writes and (remote) reads of one value."""
SCHEMES = ("file", "s3")
_HEX = re.compile(r"[0-9a-f]{64}")
_STAGING = re.compile(r"([0-9a-f]{64})#\d+")
"""obstore's local store writes ``<key>#<n>`` and renames it into place; a writer killed
in between leaves that file, which its listing never shows (``gc`` walks for them)."""
_MISSING: tuple[type[BaseException], ...] = (NotFoundError, FileNotFoundError)
DEFAULT_CLIENT: dict[str, Any] = {"connect_timeout": timedelta(seconds=2)}
"""S3 defaults (``client_options=`` overrides them): a store that does not answer fails
the put or read fast, as the tiers do (``Timeouts``), instead of obstore's defaults."""
DEFAULT_RETRY: dict[str, Any] = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=10),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2)},
}
"""obstore retries 10 times for up to 3 minutes by default, all of it blocking the put's
event loop; a put that cannot store its object fails within about 10 s instead
(``retry_config=`` overrides it)."""
MIN_CHUNK_AVG = 1024
MAX_CHUNK_AVG = 1 << 20
"""``chunk_bytes`` bounds: the chunker takes averages of 256 B to 4 MiB; below 1 KiB a
chunk's reference line is a large share of it, above 1 MiB little is shared."""


class ObjectStoreUnavailableError(DualSaverError, ConnectionError):
    """The offload store did not answer (or refused) within its retries.

    Not a ``StoreUnavailableError``: that one means Redis or PostgreSQL, and the chain
    answers it by going to PostgreSQL (degraded mode), which cannot help here."""


def object_key(digest: str) -> str:
    """The key of the object whose sha256 hex digest is ``digest``."""
    return f"{ROOT}/{digest[:2]}/{digest}"


def chunk_key(digest: str) -> str:
    """The key of the chunk whose sha256 hex digest is ``digest``."""
    return f"{CHUNK_ROOT}/{digest[:2]}/{digest}"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object as the store lists it (``digest`` is ``None`` for a half-written
    local file: a staging leftover, collected by ``gc`` after the grace period)."""

    key: str
    digest: str | None
    size: int
    modified: datetime
    chunk: bool = False
    """Under ``chunks/``: ``gc`` gives it ``Offload.refresh_after`` more than its grace."""


class Offload:
    """Values whose stored bytes (after compression) are ``min_bytes`` or more go to an
    object store under their sha256; the tiers keep a short reference.

    Args:
        url: ``"file:///abs/dir"`` (created if missing) or ``"s3://bucket/prefix"``.
        min_bytes: smaller values stay in the tiers.
        min_bytes: smaller values stay in the tiers. Compared with the user's serde's
            bytes when the value is chunked, with the compressed (and encrypted) bytes
            when it goes whole.
        chunk_bytes: average chunk of a chunked value (``offload.chunks``); ``None``
            offloads every value whole, as before chunking. Values of an
            ``EncryptedSerializer`` always go whole.
        refresh_after: a chunk that exists and was written or refreshed less than this
            ago is not written again. Every writer and ``gc`` must use the same value.
        options: passed to ``obstore``'s store for the URL: for S3 e.g. ``endpoint``,
            ``region``, ``access_key_id``, ``secret_access_key``, ``client_options``
            (an ``http://`` endpoint turns ``allow_http`` on). Unset ones come from the
            ``AWS_*`` environment, as obstore reads it.
    """

    def __init__(
        self,
        url: str,
        min_bytes: int = DEFAULT_MIN_BYTES,
        *,
        chunk_bytes: int | None = DEFAULT_CHUNK_BYTES,
        refresh_after: timedelta = DEFAULT_REFRESH_AFTER,
        **options: Any,
    ) -> None:
        if isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or min_bytes < 1:
            raise ConfigurationError(f"Offload.min_bytes must be an int >= 1, got {min_bytes!r}")
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f"Offload.url must be a non-empty URL, got {url!r}")
        if chunk_bytes is not None and (
            isinstance(chunk_bytes, bool)
            or not isinstance(chunk_bytes, int)
            or not MIN_CHUNK_AVG <= chunk_bytes <= MAX_CHUNK_AVG
        ):
            raise ConfigurationError(
                f"Offload.chunk_bytes must be None or an int from {MIN_CHUNK_AVG} to "
                f"{MAX_CHUNK_AVG}, got {chunk_bytes!r}"
            )
        if not isinstance(refresh_after, timedelta) or refresh_after < timedelta(0):
            raise ConfigurationError(
                f"Offload.refresh_after must be a timedelta of 0 or more, got {refresh_after!r}"
            )
        self.url = url
        self.min_bytes = min_bytes
        self.chunk_bytes = chunk_bytes
        self.refresh_after = refresh_after
        self.options = options
        self._fresh: OrderedDict[str, float] = OrderedDict()
        """Chunk digest -> a time (epoch s) its object was known to be modified at or after."""
        self._fresh_lock = threading.Lock()
        self.chunk_cache = ChunkCache(CHUNK_CACHE_BYTES)
        """Chunks this process wrote or read (immutable: named by their hash)."""
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.local_dir: Path | None = None
        """The directory of a ``file://`` URL; ``None`` for S3."""
        parsed = urlparse(url)
        if parsed.scheme not in SCHEMES:
            raise ConfigurationError(f"Offload.url must start with file:// or s3://, got {url!r}")
        if parsed.scheme == "file":
            self.store: LocalStore | S3Store = self._local(parsed.netloc, unquote(parsed.path))
        else:
            self.store = self._s3(url, parsed.netloc, options)

    def _local(self, host: str, path: str) -> LocalStore:
        if host not in ("", "localhost") or not path.startswith("/"):
            raise ConfigurationError(
                f"Offload.url {self.url!r}: a file URL names an absolute directory, file:///abs/dir"
            )
        if self.options:
            raise ConfigurationError(
                f"Offload options {sorted(self.options)} apply to s3:// only, not {self.url!r}"
            )
        self.local_dir = Path(path)
        try:
            self.local_dir.mkdir(parents=True, exist_ok=True)
            return LocalStore(prefix=self.local_dir)
        except (OSError, ObjectStoreError) as exc:
            raise ConfigurationError(f"Offload.url {self.url!r}: cannot use it: {exc}") from None

    def _s3(self, url: str, bucket: str, options: dict[str, Any]) -> S3Store:
        if not bucket:
            raise ConfigurationError(f"Offload.url {url!r} names no bucket: s3://bucket/prefix")
        options = dict(options)
        client = {**DEFAULT_CLIENT, **options.get("client_options", {})}
        endpoint = options.get("endpoint")
        if isinstance(endpoint, str) and endpoint.startswith("http://"):
            client.setdefault("allow_http", True)
        options["client_options"] = client
        options.setdefault("retry_config", DEFAULT_RETRY)
        try:
            store: S3Store = S3Store.from_url(url, **options)
        except (ObjectStoreError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"Offload for {url!r}: bad options: {exc}") from None
        return store

    @classmethod
    def read_only(cls, url: str, **options: Any) -> Offload:
        """Offloading turned off: nothing new goes to the store, and the references
        already stored still read from it."""
        return cls(url, NEVER, **options)

    def __repr__(self) -> str:
        if self.chunk_bytes == DEFAULT_CHUNK_BYTES:
            return f"Offload({self.url!r}, min_bytes={self.min_bytes})"
        return f"Offload({self.url!r}, min_bytes={self.min_bytes}, chunk_bytes={self.chunk_bytes})"

    @property
    def remote(self) -> bool:
        return self.local_dir is None

    # -- objects --------------------------------------------------------------------

    def put(self, data: bytes) -> str:
        """Store ``data`` (durably) under its sha256; returns the hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        key = object_key(digest)
        try:
            if self.local_dir is not None and self._touch(key, len(data)):
                return digest
            obstore.put(self.store, key, data, use_multipart=False)
            if self.local_dir is not None:
                self._fsync(key)
        except (ObjectStoreError, OSError) as exc:
            raise ObjectStoreUnavailableError(
                f"could not store an object in {self.url}: {exc}"
            ) from None
        return digest

    def get(self, digest: str) -> bytes | None:
        """The object's bytes, or ``None`` if there is none."""
        try:
            return bytes(obstore.get(self.store, object_key(digest)).bytes())
        except _MISSING:
            return None
        except (ObjectStoreError, OSError) as exc:
            raise ObjectStoreUnavailableError(
                f"could not read an object from {self.url}: {exc}"
            ) from None

    def head(self, key: str) -> StoredObject | None:
        """The object at ``key`` as it is now, or ``None`` if there is none."""
        try:
            meta = obstore.head(self.store, key)
        except _MISSING:
            return None
        chunk = key.startswith(f"{CHUNK_ROOT}/")
        return StoredObject(key, _digest(key), meta["size"], meta["last_modified"], chunk)

    def delete(self, key: str) -> None:
        """Remove the object at ``key``; one already gone is fine."""
        with contextlib.suppress(*_MISSING):
            obstore.delete(self.store, key)

    def objects(self) -> Iterator[StoredObject]:
        """Every object under ``sha256/``, and, in a local directory, the half-written
        files a killed writer left."""
        for root in (ROOT, CHUNK_ROOT):
            for page in obstore.list(self.store, f"{root}/", chunk_size=1000):
                for meta in page:
                    path = meta["path"]
                    yield StoredObject(
                        path, _digest(path), meta["size"], meta["last_modified"], root == CHUNK_ROOT
                    )
        if self.local_dir is not None:
            yield from self._staging_leftovers()

    # -- chunks ---------------------------------------------------------------------

    def put_chunks(self, chunks: Sequence[bytes]) -> list[str]:
        """Store each of ``chunks`` (durably) under its sha256 unless it is there and
        fresh (written or refreshed less than ``refresh_after`` ago); their digests, in
        order. Returns only once every one is durable; writes run concurrently."""
        digests = [hashlib.sha256(c).hexdigest() for c in chunks]
        self.store_chunks(dict(zip(digests, chunks, strict=False)))
        return digests

    def store_chunks(self, chunks: dict[str, bytes]) -> None:
        """``put_chunks`` of chunks whose digests the caller computed. Each one this
        process does not remember as fresh is looked at, then written if it is missing
        or old, concurrently."""
        try:
            todo = {d: data for d, data in chunks.items() if not self.remembered_fresh(d)}
            if not todo:
                return
            if len(todo) == 1:
                self._ensure_chunk(*next(iter(todo.items())))
            else:
                list(self._executor().map(self._ensure_chunk, todo, todo.values()))
        except (ObjectStoreError, OSError) as exc:
            raise ObjectStoreUnavailableError(
                f"could not store an object in {self.url}: {exc}"
            ) from None

    def get_chunks(self, digests: Sequence[str]) -> list[bytes | None]:
        """Each chunk's stored bytes (``None`` for one that is missing), in order;
        concurrently from a remote store."""
        try:
            if self.remote and len(digests) > 1:
                return list(self._executor().map(self._get_key, map(chunk_key, digests)))
            return [self._get_key(chunk_key(d)) for d in digests]
        except (ObjectStoreError, OSError) as exc:
            raise ObjectStoreUnavailableError(
                f"could not read an object from {self.url}: {exc}"
            ) from None

    def _get_key(self, key: str) -> bytes | None:
        try:
            return bytes(obstore.get(self.store, key).bytes())
        except _MISSING:
            return None

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="dualsaver-offload")
            return self._pool

    def _ensure_chunk(self, digest: str, data: bytes) -> None:
        """The chunk as it is if the store holds it modified within ``refresh_after``
        (``gc`` keeps it until its grace plus ``refresh_after`` has passed, longer than
        the record about to reference it takes), else written (or refreshed) now."""
        if self.refresh_after > timedelta(0):
            horizon = time.time() - self.refresh_after.total_seconds()
            found = self.head(chunk_key(digest))
            if found is not None and found.size == len(data):
                modified = found.modified.timestamp()
                if modified > horizon:
                    self._remember(digest, modified)
                    return
        self._put_chunk(digest, data)

    def remembered_fresh(self, digest: str) -> bool:
        """This process wrote the chunk, or saw it modified, within ``refresh_after``
        (no call to the store)."""
        horizon = time.time() - self.refresh_after.total_seconds()
        with self._fresh_lock:
            seen = self._fresh.get(digest)
            if seen is not None and seen > horizon:
                self._fresh.move_to_end(digest)
                return True
        return False

    def _remember(self, digest: str, modified: float) -> None:
        with self._fresh_lock:
            self._fresh[digest] = modified
            self._fresh.move_to_end(digest)
            while len(self._fresh) > _FRESH_CACHE:
                self._fresh.popitem(last=False)

    def _put_chunk(self, digest: str, data: bytes) -> None:
        """Write (or, locally, refresh) one chunk durably; remember it as fresh."""
        key = chunk_key(digest)
        started = time.time()
        if self.local_dir is None or not self._touch(key, len(data)):
            obstore.put(self.store, key, data, use_multipart=False)
            if self.local_dir is not None:
                self._fsync(key)
        self._remember(digest, started)

    # -- the local directory --------------------------------------------------------

    def _path(self, key: str) -> Path:
        assert self.local_dir is not None
        return self.local_dir / key

    def _touch(self, key: str, size: int) -> bool:
        """An existing object of the right size: refresh its time (so ``gc`` counts it
        as just written) and make sure it is on disk. ``False`` if there is none."""
        path = self._path(key)
        try:
            if path.stat().st_size != size:
                return False
            os.utime(path)
        except FileNotFoundError:
            return False
        self._fsync(key)
        return True

    def _fsync(self, key: str) -> None:
        """The file, then every directory from it up to the root: the object and its
        name survive a power loss before any record references it."""
        path = self._path(key)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        assert self.local_dir is not None
        for directory in (path.parent, path.parent.parent, self.local_dir):
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _staging_leftovers(self) -> Iterator[StoredObject]:
        assert self.local_dir is not None
        for root in (ROOT, CHUNK_ROOT):
            for directory, _, files in os.walk(self.local_dir / root):
                for name in files:
                    if _STAGING.fullmatch(name):
                        path = Path(directory) / name
                        try:
                            stat = path.stat()
                        except FileNotFoundError:
                            continue
                        key = path.relative_to(self.local_dir).as_posix()
                        modified = datetime.fromtimestamp(stat.st_mtime, timezone.utc)
                        yield StoredObject(key, None, stat.st_size, modified)

    def delete_leftover(self, key: str) -> None:
        """Remove a half-written local file (obstore does not address them)."""
        self._path(key).unlink(missing_ok=True)


def env_offload(url: str | None) -> Offload | None:
    """``Offload(url)`` (``None`` without a URL), its ``min_bytes`` from
    ``DUALSAVER_OFFLOAD_MIN_BYTES`` if that is set."""
    if not url:
        return None
    text = os.environ.get("DUALSAVER_OFFLOAD_MIN_BYTES")
    if not text:
        return Offload(url)
    try:
        min_bytes = int(text)
    except ValueError:
        raise ConfigurationError(
            f"DUALSAVER_OFFLOAD_MIN_BYTES must be a whole number of bytes, got {text!r}"
        ) from None
    return Offload(url, min_bytes)


def _digest(key: str) -> str | None:
    name = key.rsplit("/", 1)[-1]
    if _HEX.fullmatch(name) and key in (object_key(name), chunk_key(name)):
        return name
    return None
