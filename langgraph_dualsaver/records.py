"""The pure core: input checks, record packing and versions. No I/O.

Both tiers store the same records, so a checkpoint copied from Redis to PostgreSQL is
the same bytes:

* a checkpoint is stored without its channel values (``encode_checkpoint``, msgpack);
* each channel value is one blob per ``(thread, namespace, channel, version)``
  (``dump_blobs``, through the saver's own serde, so ``serde=`` and the allowlist apply);
* metadata is JSON (PostgreSQL keeps it as JSONB, so ``list(filter=...)`` is ``@>``);
* pending writes are ``StoredWrite`` rows, ordered by ``writes_sort_key``.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    PendingWrite,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from langgraph_dualsaver.compression import StoredValueError
from langgraph_dualsaver.errors import (
    CheckpointTooLargeError,
    InvalidIdError,
    InvalidInputError,
    InvalidMetadataError,
    MissingThreadIdError,
    SerializationError,
)
from langgraph_dualsaver.offload.serde import is_offloaded, not_configured
from langgraph_dualsaver.offload.store import ObjectStoreUnavailableError

__all__ = [
    "EMPTY_TYPE",
    "PRUNE_STRATEGIES",
    "BlobRecord",
    "CheckpointRecord",
    "Limits",
    "ListArguments",
    "StoredWrite",
    "WritesRecord",
    "checkpoint_config",
    "checkpoint_ids",
    "checkpoint_record",
    "config_fields",
    "decode_checkpoint",
    "decode_metadata",
    "dump_blobs",
    "dump_writes",
    "encode_checkpoint",
    "encode_metadata",
    "list_arguments",
    "load_blobs",
    "load_writes",
    "metadata_matches",
    "next_version",
    "pack_record",
    "prune_arguments",
    "record_versions",
    "resolve_writes",
    "run_ids_argument",
    "saved_config",
    "unpack_record",
    "validate_filter",
    "validate_id",
    "validate_key",
    "validate_metadata",
    "version_key",
    "where",
    "writes_record",
]

EMPTY_TYPE = "empty"
"""Blob type of a channel that has a version but no value (it was cleared)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits, checked before any I/O, identically in both tiers.

    PostgreSQL refuses a primary-key index entry over 2,704 bytes (a third of a page).
    The longest keys hold four texts (the writes table: thread, namespace, checkpoint
    and task ids; the blobs table: thread, namespace, channel and version), so each id
    is capped and so is their sum: ``max_key_bytes`` leaves room for the entry's own
    overhead. A Redis-only saver may raise both (a 1 MB thread_id works there).
    """

    max_id_bytes: int = 800
    """Longest thread_id, checkpoint_ns, checkpoint_id, task_id, channel or version,
    in UTF-8 bytes."""
    max_key_bytes: int = 2400
    """Longest sum of the ids that form one stored row's primary key, in UTF-8 bytes."""
    max_value_bytes: int = 64 * 1024 * 1024
    """Largest serialized channel value, pending write or metadata, in bytes."""


DEFAULT_LIMITS = Limits()


# -- input checks ---------------------------------------------------------------------


def validate_id(kind: str, value: object, limits: Limits, *, allow_empty: bool = False) -> str:
    """Return ``value`` if it is a usable id, else raise a specific error."""
    if not isinstance(value, str):
        if kind == "thread_id" and value is None:
            raise MissingThreadIdError("config['configurable']['thread_id'] is missing")
        raise InvalidIdError(f"{kind} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        if kind == "thread_id":
            raise MissingThreadIdError("config['configurable']['thread_id'] is empty")
        raise InvalidIdError(f"{kind} must not be empty")
    if "\x00" in value:
        raise InvalidIdError(f"{kind} contains a NUL character")
    size = len(_utf8(kind, value))
    if size > limits.max_id_bytes:
        raise InvalidIdError(
            f"{kind} is {size} bytes long; the limit is {limits.max_id_bytes} (Limits.max_id_bytes)"
        )
    return value


def _utf8(what: str, value: str) -> bytes:
    """UTF-8 bytes of a text both stores must keep; a lone surrogate (which no store can
    hold as text) is refused here, before any I/O."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidIdError(
            f"{what} contains a lone surrogate ({value[exc.start : exc.end]!r} at position "
            f"{exc.start}), which is not valid UTF-8"
        ) from None


def validate_key(what: str, parts: Sequence[str], limits: Limits) -> None:
    """Refuse ids whose sum would overflow one PostgreSQL primary-key index entry."""
    size = sum(len(_utf8(what, part)) for part in parts)
    if size > limits.max_key_bytes:
        raise InvalidIdError(
            f"{what} is {size} bytes long in all; the limit is {limits.max_key_bytes} "
            "(Limits.max_key_bytes), since PostgreSQL's index entries hold at most 2,704"
        )


PRUNE_STRATEGIES = ("keep_latest", "delete")


def prune_arguments(thread_ids: object, strategy: object, limits: Limits) -> list[str]:
    """The validated, de-duplicated thread ids of a ``prune`` call, in sorted order."""
    if strategy not in PRUNE_STRATEGIES:
        raise InvalidInputError(
            f"unknown prune strategy {strategy!r}; use one of {', '.join(PRUNE_STRATEGIES)}"
        )
    return sorted({validate_id("thread_id", t, limits) for t in _many("thread_ids", thread_ids)})


def run_ids_argument(run_ids: object) -> list[str]:
    """The de-duplicated run ids of a ``delete_for_runs`` call (a UUID is taken as its
    text), in sorted order."""
    return sorted({str(run_id) for run_id in _many("run_ids", run_ids)})


def _many(what: str, values: object) -> Iterable[object]:
    """``values`` if it is a collection of ids; one string (which would be taken a
    character at a time) and anything else are refused."""
    noun = what.removesuffix("s").replace("_", " ")
    if isinstance(values, (str, bytes)):
        raise InvalidInputError(f"{what} must be a sequence of {noun}s, not one string")
    if not isinstance(values, Iterable):
        raise InvalidInputError(
            f"{what} must be a sequence of {noun}s, got {type(values).__name__}"
        )
    return values


def config_fields(config: object, what: str = "config") -> Mapping[str, Any]:
    """``config["configurable"]``, refusing a config (or a configurable) not a dict."""
    if not isinstance(config, Mapping):
        raise InvalidInputError(
            f"{what} must be a dict (a RunnableConfig), got {type(config).__name__}"
        )
    configurable = config.get("configurable") or {}
    if not isinstance(configurable, Mapping):
        raise InvalidInputError(
            f"{what}['configurable'] must be a dict, got {type(configurable).__name__}"
        )
    return configurable


def checkpoint_ids(
    config: RunnableConfig, limits: Limits, *, need_thread: bool = True
) -> tuple[str, str, str | None]:
    """Validated ``(thread_id, checkpoint_ns, checkpoint_id)`` of a config."""
    configurable = config_fields(config)
    thread_id = configurable.get("thread_id")
    if thread_id is None and not need_thread:
        thread_id = ""
    else:
        thread_id = validate_id("thread_id", thread_id, limits)
    ns = configurable.get("checkpoint_ns") or ""
    validate_id("checkpoint_ns", ns, limits, allow_empty=True)
    checkpoint_id = configurable.get("checkpoint_id") or None
    if checkpoint_id is not None:
        validate_id("checkpoint_id", checkpoint_id, limits)
    return thread_id, ns, checkpoint_id


@dataclass(frozen=True, slots=True)
class ListArguments:
    """The validated arguments of a ``list`` call; ``None`` where not given."""

    thread_id: str | None
    checkpoint_ns: str | None
    checkpoint_id: str | None
    before_id: str | None


def list_arguments(
    config: object, filter: object, before: object, limit: object, limits: Limits
) -> ListArguments:
    """Validate a ``list`` call's arguments, as every tier must, before any I/O."""
    configurable = config_fields(config) if config is not None else {}
    thread_id = configurable.get("thread_id")
    if thread_id is not None:
        validate_id("thread_id", thread_id, limits)
    ns = configurable.get("checkpoint_ns")
    if ns is not None:
        validate_id("checkpoint_ns", ns, limits, allow_empty=True)
    checkpoint_id = configurable.get("checkpoint_id") or None
    if checkpoint_id is not None:
        validate_id("checkpoint_id", checkpoint_id, limits)
    before_id = None
    if before is not None:
        before_id = config_fields(before, "before").get("checkpoint_id") or None
        if before_id is not None:
            validate_id("checkpoint_id", before_id, limits)
    validate_filter(filter)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise InvalidInputError(f"limit must be an int or None, got {type(limit).__name__}")
    return ListArguments(thread_id, ns, checkpoint_id, before_id)


def validate_filter(filter: object) -> None:
    """Refuse a metadata filter that the tiers could not match alike: not a dict, keys
    that are not strings, values JSON cannot hold. (Text holding NUL is allowed: no
    stored metadata can hold it, so it matches nothing.)"""
    if filter is None:
        return
    if not isinstance(filter, Mapping):
        raise InvalidInputError(
            f"filter must be a dict of metadata keys and values, got {type(filter).__name__}"
        )
    _validate_filter_value(filter, "filter")


def _validate_filter_value(value: object, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMetadataError(f"{path} keys must be strings, got {key!r}")
            _validate_filter_value(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _validate_filter_value(item, f"{path}[{i}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMetadataError(f"{path} is {value}, which JSON cannot represent")
    elif value is not None and not isinstance(value, (str, int)):
        raise InvalidMetadataError(
            f"{path} is of type {type(value).__name__}, which JSON cannot hold"
        )


def validate_metadata(metadata: Mapping[str, Any], path: str = "metadata") -> None:
    """Reject NUL characters anywhere in metadata keys or string values."""
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidMetadataError(f"{path} keys must be strings, got {key!r}")
        if "\x00" in key:
            raise InvalidMetadataError(f"{path} key {key!r} contains a NUL character")
        _validate_metadata_value(key, f"{path} key")
        _validate_metadata_value(value, f"{path}[{key!r}]")


def _validate_metadata_value(value: Any, path: str) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidMetadataError(f"{path} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidMetadataError(
                f"{path} contains a lone surrogate, which is not valid UTF-8"
            ) from None
    elif isinstance(value, Mapping):
        validate_metadata(value, path)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _validate_metadata_value(item, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidMetadataError(f"{path} is {value}, which JSON cannot represent")


# -- metadata -------------------------------------------------------------------------


def encode_metadata(
    config: RunnableConfig, metadata: CheckpointMetadata, limits: Limits = DEFAULT_LIMITS
) -> bytes:
    """Metadata as stored: LangGraph's serializable form, as compact UTF-8 JSON, at
    most ``limits.max_value_bytes``."""
    validate_metadata(metadata)
    merged = get_serializable_checkpoint_metadata(config, metadata)
    validate_metadata(merged, "metadata (with the config's values)")
    try:
        data = json.dumps(
            merged, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidMetadataError(f"metadata cannot be stored as JSON: {exc}") from exc
    if len(data) > limits.max_value_bytes:
        raise CheckpointTooLargeError(
            f"metadata is {len(data)} bytes as JSON; the limit is {limits.max_value_bytes} "
            "(Limits.max_value_bytes)"
        )
    return data


def decode_metadata(data: bytes | str) -> CheckpointMetadata:
    metadata: CheckpointMetadata = json.loads(data)
    return metadata


def metadata_matches(metadata: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    """JSONB ``@>`` containment of ``filter`` in ``metadata``, for tiers without SQL."""
    if not filter:
        return True
    return _contains(metadata, filter)


def _contains(value: Any, pattern: Any) -> bool:
    if isinstance(pattern, Mapping):
        return isinstance(value, Mapping) and all(
            k in value and _contains(value[k], v) for k, v in pattern.items()
        )
    if isinstance(pattern, (list, tuple)):
        return isinstance(value, (list, tuple)) and all(
            any(_contains(item, p) for item in value) for p in pattern
        )
    if isinstance(pattern, bool) or isinstance(value, bool):
        return type(pattern) is type(value) and pattern == value
    return bool(value == pattern)


# -- checkpoints ----------------------------------------------------------------------


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """The checkpoint without its channel values, packed with msgpack."""
    body = {k: v for k, v in checkpoint.items() if k != "channel_values"}
    try:
        packed: bytes = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:  # incl. UnicodeEncodeError
        raise SerializationError(f"cannot encode the checkpoint's own fields: {exc}") from exc
    return packed


def decode_checkpoint(data: bytes, channel_values: dict[str, Any]) -> Checkpoint:
    body: Checkpoint = msgpack.unpackb(data, raw=False, strict_map_key=False)
    body["channel_values"] = channel_values
    return body


# -- versions -------------------------------------------------------------------------


def next_version(current: str | int | float | None) -> str:
    """The official savers' ``"%032d.%016f"`` version; integer versions are accepted."""
    if current is None:
        major = 0
    elif isinstance(current, (int, float)):
        major = int(current)
    else:
        major = int(current.split(".")[0])
    return f"{major + 1:032}.{random.random():016}"


def version_key(version: str | int | float) -> str:
    """A version as stored in blob keys: integers from callers become their decimal text."""
    return version if isinstance(version, str) else str(version)


# -- blobs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobRecord:
    """One channel value at one version. ``type == EMPTY_TYPE`` means no value."""

    channel: str
    version: str
    type: str
    data: bytes | None


def _dumps(serde: SerializerProtocol, value: Any, what: str, limits: Limits) -> tuple[str, bytes]:
    try:
        type_, data = serde.dumps_typed(value)
    except CheckpointTooLargeError as exc:  # over the limit before compression
        raise CheckpointTooLargeError(f"{what} {exc}") from None
    except ObjectStoreUnavailableError as exc:  # an outage, not bad input
        raise ObjectStoreUnavailableError(f"{what}: {exc}") from None
    except Exception as exc:  # serde raises whatever its encoder raises
        raise SerializationError(
            f"cannot serialize {what} ({type(value).__name__}): {exc}"
        ) from exc
    if len(data) > limits.max_value_bytes:
        raise CheckpointTooLargeError(
            f"{what} serializes to {len(data)} bytes; the limit is "
            f"{limits.max_value_bytes} (Limits.max_value_bytes)"
        )
    return type_, data


def dump_blobs(
    serde: SerializerProtocol,
    values: Mapping[str, Any],
    new_versions: ChannelVersions,
    limits: Limits,
) -> list[BlobRecord]:
    """Blobs for the channels whose version changed in this checkpoint, and only those."""
    blobs = []
    for channel, version in new_versions.items():
        validate_id("channel", channel, limits)
        validate_id("version", version_key(version), limits)
        if channel in values:
            type_, data = _dumps(serde, values[channel], f"channel {channel!r}", limits)
            blobs.append(BlobRecord(channel, version_key(version), type_, data))
        else:
            blobs.append(BlobRecord(channel, version_key(version), EMPTY_TYPE, None))
    return blobs


def where(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> str:
    """The start of a read error's message: which checkpoint it was reading."""
    ns = f" in namespace {checkpoint_ns!r}" if checkpoint_ns else ""
    return f"thread {thread_id!r}, checkpoint {checkpoint_id!r}{ns}: "


def _loads(serde: SerializerProtocol, type_: str, data: bytes) -> Any:
    if is_offloaded(type_) and not getattr(serde, "resolves_offloaded", False):
        raise not_configured(type_)
    return serde.loads_typed((type_, data))


def load_blobs(
    serde: SerializerProtocol,
    versions: ChannelVersions,
    blobs: Mapping[tuple[str, str], tuple[str, bytes | None]],
    *,
    at: str = "",
) -> dict[str, Any]:
    """Channel values of a checkpoint from the blobs at its versions.

    ``blobs`` maps ``(channel, version_key)`` to ``(type, data)``; ``at`` (``where``)
    starts the message of a value that does not read.
    """
    values = {}
    for channel, version in versions.items():
        found = blobs.get((channel, version_key(version)))
        if found is not None and found[0] != EMPTY_TYPE:
            type_, data = found
            assert data is not None, "only an empty blob is stored without data"
            try:
                values[channel] = _loads(serde, type_, data)
            except StoredValueError as exc:
                raise type(exc)(f"{at}channel {channel!r} at version {version}: {exc}") from None
    return values


# -- pending writes -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredWrite:
    """One pending write as both tiers store it; a ``WritesRecord`` carries a task's."""

    task_id: str
    task_path: str
    idx: int
    channel: str
    type: str
    data: bytes

    @property
    def overwrites(self) -> bool:
        """Special channels (error, interrupt, resume, scheduled) replace; others don't."""
        return self.idx < 0


def dump_writes(
    serde: SerializerProtocol,
    task_id: str,
    task_path: str,
    writes: Sequence[tuple[str, Any]],
    limits: Limits,
) -> list[StoredWrite]:
    validate_id("task_id", task_id, limits, allow_empty=True)
    if not isinstance(task_path, str) or "\x00" in task_path:
        raise InvalidIdError("task_path must be a string without NUL characters")
    _utf8("task_path", task_path)
    records = []
    for idx, (channel, value) in enumerate(writes):
        validate_id("channel", channel, limits)
        type_, data = _dumps(serde, value, f"write to {channel!r}", limits)
        records.append(
            StoredWrite(task_id, task_path, WRITES_IDX_MAP.get(channel, idx), channel, type_, data)
        )
    return records


def resolve_writes(records: Iterable[StoredWrite]) -> list[StoredWrite]:
    """Apply the write rules to records in arrival order, then sort them.

    Per ``(task_id, idx)``: a special channel's last write wins, an ordinary write's
    first wins. The result is in ``writes_sort_key`` order.
    """
    kept: dict[tuple[str, int], StoredWrite] = {}
    for record in records:
        key = (record.task_id, record.idx)
        if record.overwrites or key not in kept:
            kept[key] = record
    return sorted(kept.values(), key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))


def load_writes(
    serde: SerializerProtocol, records: Iterable[StoredWrite], *, at: str = ""
) -> list[PendingWrite]:
    return [(w.task_id, w.channel, _load_write(serde, w, at)) for w in records]


def _load_write(serde: SerializerProtocol, write: StoredWrite, at: str) -> Any:
    try:
        return _loads(serde, write.type, write.data)
    except StoredValueError as exc:
        raise type(exc)(
            f"{at}pending write to {write.channel!r} of task {write.task_id!r}: {exc}"
        ) from None


# -- whole records, as the outbox carries them ----------------------------------------


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """A ``put``: the checkpoint, its metadata and the blobs it introduced."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    checkpoint: bytes
    metadata: bytes
    blobs: tuple[BlobRecord, ...] = field(default=())
    channel_versions: Mapping[str, Any] | None = field(default=None, compare=False)
    """The checkpoint's ``channel_versions`` when known (a record built by ``put``), so
    neither tier unpacks ``checkpoint`` again to find them; see ``record_versions``."""


@dataclass(frozen=True, slots=True)
class WritesRecord:
    """A ``put_writes``: one task's writes against one checkpoint."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    writes: tuple[StoredWrite, ...]


def record_versions(record: CheckpointRecord) -> Mapping[str, Any]:
    """A checkpoint record's ``channel_versions``: carried, or read from its bytes."""
    if record.channel_versions is not None:
        return record.channel_versions
    body = msgpack.unpackb(record.checkpoint, raw=False, strict_map_key=False)
    return body.get("channel_versions") or {}


_KIND_CHECKPOINT = 1
_KIND_WRITES = 2


def pack_record(record: CheckpointRecord | WritesRecord) -> bytes:
    """One record as msgpack bytes, e.g. an outbox entry."""
    if isinstance(record, CheckpointRecord):
        body: list[Any] = [
            _KIND_CHECKPOINT,
            record.thread_id,
            record.checkpoint_ns,
            record.checkpoint_id,
            record.parent_checkpoint_id,
            record.checkpoint,
            record.metadata,
            [[b.channel, b.version, b.type, b.data] for b in record.blobs],
        ]
    else:
        body = [
            _KIND_WRITES,
            record.thread_id,
            record.checkpoint_ns,
            record.checkpoint_id,
            [[w.task_id, w.task_path, w.idx, w.channel, w.type, w.data] for w in record.writes],
        ]
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def unpack_record(data: bytes) -> CheckpointRecord | WritesRecord:
    body = msgpack.unpackb(data, raw=False)
    kind = body[0]
    if kind == _KIND_CHECKPOINT:
        _, thread_id, ns, checkpoint_id, parent, checkpoint, metadata, blobs = body
        return CheckpointRecord(
            thread_id,
            ns,
            checkpoint_id,
            parent,
            checkpoint,
            metadata,
            tuple(BlobRecord(*b) for b in blobs),
        )
    if kind == _KIND_WRITES:
        _, thread_id, ns, checkpoint_id, writes = body
        return WritesRecord(thread_id, ns, checkpoint_id, tuple(StoredWrite(*w) for w in writes))
    raise ValueError(f"unknown record kind {kind!r}")


# -- building records from the saver interface's arguments ----------------------------


def checkpoint_record(
    serde: SerializerProtocol,
    limits: Limits,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
) -> CheckpointRecord:
    """Validate and encode a ``put``. Raises before any I/O; the result is what both
    tiers store."""
    thread_id, ns, _ = checkpoint_ids(config, limits)
    checkpoint_id = validate_id("checkpoint_id", checkpoint.get("id"), limits)
    parent_id = (config.get("configurable") or {}).get("checkpoint_id") or None
    validate_key(
        "thread_id + checkpoint_ns + checkpoint_id", [thread_id, ns, checkpoint_id], limits
    )
    blobs = dump_blobs(serde, checkpoint.get("channel_values") or {}, new_versions, limits)
    for blob in blobs:
        validate_key(
            f"thread_id + checkpoint_ns + channel + version of channel {blob.channel!r}",
            [thread_id, ns, blob.channel, blob.version],
            limits,
        )
    return CheckpointRecord(
        thread_id=thread_id,
        checkpoint_ns=ns,
        checkpoint_id=checkpoint_id,
        parent_checkpoint_id=parent_id,
        checkpoint=encode_checkpoint(checkpoint),
        metadata=encode_metadata(config, metadata, limits),
        blobs=tuple(blobs),
        channel_versions=checkpoint.get("channel_versions") or {},
    )


def writes_record(
    serde: SerializerProtocol,
    limits: Limits,
    config: RunnableConfig,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str = "",
) -> WritesRecord:
    """Validate and encode a ``put_writes`` against the checkpoint in ``config``."""
    thread_id, ns, checkpoint_id = checkpoint_ids(config, limits)
    if checkpoint_id is None:
        raise InvalidIdError("put_writes needs config['configurable']['checkpoint_id']")
    validate_key(
        "thread_id + checkpoint_ns + checkpoint_id + task_id",
        [thread_id, ns, checkpoint_id, task_id if isinstance(task_id, str) else ""],
        limits,
    )
    records = dump_writes(serde, task_id, task_path, writes, limits)
    return WritesRecord(thread_id, ns, checkpoint_id, tuple(records))


def checkpoint_config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    """The config that addresses one stored checkpoint."""
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def saved_config(record: CheckpointRecord) -> RunnableConfig:
    """The config ``put`` returns for a stored checkpoint."""
    return checkpoint_config(record.thread_id, record.checkpoint_ns, record.checkpoint_id)
