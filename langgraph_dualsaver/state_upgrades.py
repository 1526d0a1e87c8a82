"""State schemas that evolve: a version stamped on every write, upgrades applied on read.

A thread may wait days at a human review while a new deployment changes the shape of
its state. ``StateSchema(version, upgrades)`` describes the code's shape: ``put``
stamps ``metadata["schema_version"]``, and a checkpoint read with an older stamp has its
channel values (and its pending writes to state channels) passed through
``upgrades[v]`` for every ``v`` from its version up to the code's, in order, before
LangGraph sees it. Nothing stored is rewritten: the upgrade is redone on every read of
that checkpoint (``dualsaver migrate --write`` stores an upgraded copy instead).

Checkpoints store each channel value once per channel version and later checkpoints
point at it, so an upgraded value cannot keep the stored version (the next checkpoint
would point at the old bytes). Upgraded channels get a derived version,
``<version>+v<schema>.<digest>``, unique to the checkpoint it was read from and ordered
after the old one; the next ``put`` stores their values (``owed_versions``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointTuple, PendingWrite

from langgraph_dualsaver.errors import (
    ConfigurationError,
    MissingUpgradeError,
    SchemaTooNewError,
    StateSchemaError,
    UpgradeFailedError,
)

__all__ = [
    "SCHEMA_VERSION_KEY",
    "UPGRADED_FROM_KEY",
    "StateSchema",
    "Upgrade",
    "WrittenVersions",
    "is_state_channel",
    "owed_versions",
    "stamp",
    "stored_version",
    "upgrade_tuple",
    "upgrade_values",
]

SCHEMA_VERSION_KEY = "schema_version"
"""The metadata key every ``put`` of a saver with a ``state_schema`` stamps."""
UPGRADED_FROM_KEY = "schema_upgraded_from"
"""Set on a checkpoint read through upgrades (and on ``migrate --write`` copies): the
version it was stored at."""

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]
"""``upgrades[v]``: takes the state channels' values at version ``v`` (a partial dict
for a pending write: only the channel written), returns them at version ``v + 1``."""

_MARK = "+v"


@dataclass(frozen=True, slots=True)
class StateSchema:
    """The version of the graph's state schema, and the upgrades that reach it.

    Args:
        version: this code's schema version (an int, 1 or more).
        upgrades: ``{v: function}`` taking version ``v`` values to ``v + 1``; every
            version from the oldest readable one up to ``version - 1`` needs one.
        unversioned: the version of a checkpoint without a stamp (written before
            ``state_schema`` was set, or by a saver without one).
    """

    version: int
    upgrades: Mapping[int, Upgrade] = field(default_factory=dict)
    unversioned: int = 1

    def __post_init__(self) -> None:
        for name, value in (("version", self.version), ("unversioned", self.unversioned)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"StateSchema {name} must be an int >= 1, got {value!r}")
        for step, upgrade in self.upgrades.items():
            if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step < self.version:
                raise ConfigurationError(
                    f"StateSchema upgrades key {step!r} must be an int from 1 to "
                    f"{self.version - 1} (version - 1): upgrades[v] takes version v to v + 1"
                )
            if not callable(upgrade):
                raise ConfigurationError(f"StateSchema upgrades[{step}] is not callable")
        object.__setattr__(self, "upgrades", dict(self.upgrades))

    def chain(self, stored: int, where: str = "a checkpoint") -> list[Upgrade]:
        """The upgrades from ``stored`` to ``version``, in order; refuses a newer stamp
        and a chain with a gap."""
        if stored > self.version:
            raise SchemaTooNewError(
                f"{where} was written under state schema version {stored}, newer than this "
                f"code's {self.version}: deploy code at version {stored} or later to read it "
                "(no downgrade is attempted)"
            )
        missing = [v for v in range(stored, self.version) if v not in self.upgrades]
        if missing:
            raise MissingUpgradeError(
                f"{where} is at state schema version {stored} and this code is at "
                f"{self.version}, but StateSchema.upgrades has no entry for "
                f"{', '.join(map(str, missing))} (upgrades[v] takes v to v + 1)"
            )
        return [self.upgrades[v] for v in range(stored, self.version)]


def stored_version(metadata: Mapping[str, Any] | None, schema: StateSchema) -> int:
    """The schema version a checkpoint was written at: its stamp, or ``unversioned``."""
    found = (metadata or {}).get(SCHEMA_VERSION_KEY)
    if found is None:
        return schema.unversioned
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        raise StateSchemaError(f"metadata {SCHEMA_VERSION_KEY}={found!r} is not a version")
    return found


def stamp(metadata: Mapping[str, Any], schema: StateSchema) -> dict[str, Any]:
    """``metadata`` with this code's schema version, as ``put`` stores it."""
    return {**metadata, SCHEMA_VERSION_KEY: schema.version}


def is_state_channel(channel: str) -> bool:
    """A key of the graph's state; LangGraph's own channels (``__start__``,
    ``branch:to:node``, ``__interrupt__``, ...) are never passed to upgrades."""
    return not channel.startswith("__") and ":" not in channel


def upgrade_values(
    values: Mapping[str, Any], chain: list[Upgrade], stored: int, where: str
) -> dict[str, Any]:
    """The state channels of ``values`` through ``chain``; LangGraph's channels as they were."""
    state = {ch: v for ch, v in values.items() if is_state_channel(ch)}
    for offset, upgrade in enumerate(chain):
        try:
            state = upgrade(dict(state))
        except Exception as exc:
            raise UpgradeFailedError(
                f"upgrading {where} from state schema version {stored + offset} to "
                f"{stored + offset + 1} raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(state, Mapping):
            raise UpgradeFailedError(
                f"upgrades[{stored + offset}] returned {type(state).__name__}, not a dict"
            )
        bad = [ch for ch in state if not isinstance(ch, str) or not is_state_channel(ch)]
        if bad:
            raise UpgradeFailedError(
                f"upgrades[{stored + offset}] returned {bad!r}: upgrades may set state keys "
                "only, not LangGraph's own channels"
            )
    return {**{ch: v for ch, v in values.items() if not is_state_channel(ch)}, **state}


def _derived_version(base: str | int | float, schema: int, checkpoint_id: str, channel: str) -> str:
    digest = hashlib.sha1(f"{checkpoint_id}\x00{channel}".encode()).hexdigest()[:8]
    return f"{base}{_MARK}{schema}.{digest}"


def _upgraded_checkpoint(
    checkpoint: Checkpoint, values: dict[str, Any], schema: StateSchema
) -> Checkpoint:
    old_values = checkpoint.get("channel_values") or {}
    versions: dict[str, Any] = dict(checkpoint.get("channel_versions") or {})
    base = max((str(v) for v in versions.values()), default=f"{0:032}.{0:016}")
    for channel in [ch for ch in versions if is_state_channel(ch)]:
        if channel in old_values and channel not in values:
            del versions[channel]  # removed (or renamed) by an upgrade
    for channel in values:
        if is_state_channel(channel):
            versions[channel] = _derived_version(
                versions.get(channel, base), schema.version, checkpoint["id"], channel
            )
    return {**checkpoint, "channel_values": values, "channel_versions": versions}


def _upgraded_writes(
    writes: list[PendingWrite] | None, chain: list[Upgrade], stored: int, where: str
) -> list[PendingWrite] | None:
    if not writes:
        return writes
    upgraded: list[PendingWrite] = []
    for task_id, channel, value in writes:
        if not is_state_channel(channel):
            upgraded.append((task_id, channel, value))  # interrupts, resumes, errors, ...
            continue
        state = upgrade_values({channel: value}, chain, stored, f"a pending write of {where}")
        upgraded.extend((task_id, ch, v) for ch, v in state.items())
    return upgraded


def upgrade_tuple(found: CheckpointTuple, schema: StateSchema) -> CheckpointTuple:
    """``found`` at ``schema.version``: itself if it is there already, else an upgraded
    copy (values, pending writes, derived channel versions and stamped metadata).

    Raises ``SchemaTooNewError`` or ``MissingUpgradeError`` (refused, nothing returned)
    and ``UpgradeFailedError`` (an upgrade raised)."""
    stored = stored_version(found.metadata, schema)
    if stored == schema.version:
        return found
    configurable = found.config.get("configurable") or {}
    where = (
        f"checkpoint {configurable.get('checkpoint_id')!r} of thread "
        f"{configurable.get('thread_id')!r}"
    )
    chain = schema.chain(stored, where)
    values = upgrade_values(found.checkpoint.get("channel_values") or {}, chain, stored, where)
    metadata = {
        **(found.metadata or {}),
        SCHEMA_VERSION_KEY: schema.version,
        UPGRADED_FROM_KEY: stored,
    }
    return found._replace(
        checkpoint=_upgraded_checkpoint(found.checkpoint, values, schema),
        metadata=metadata,  # type: ignore[arg-type]
        pending_writes=_upgraded_writes(found.pending_writes, chain, stored, where),
    )


class WrittenVersions:
    """Derived versions a saver has stored already, so later ``put`` calls need not
    store their values again (a bounded memory: forgetting costs one idempotent write)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._seen: OrderedDict[tuple[str, str, str, str], None] = OrderedDict()

    def __contains__(self, key: tuple[str, str, str, str]) -> bool:
        return key in self._seen

    def add(self, key: tuple[str, str, str, str]) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)


def owed_versions(
    thread_id: str,
    checkpoint_ns: str,
    checkpoint: Checkpoint,
    new_versions: ChannelVersions,
    written: WrittenVersions,
) -> tuple[ChannelVersions, list[tuple[str, str, str, str]]]:
    """``new_versions`` plus the derived versions ``checkpoint`` points at and this
    saver has not stored yet (their values came from an upgrade on read, so no stored
    blob holds them), and the keys to remember once the put succeeded."""
    versions = checkpoint.get("channel_versions") or {}
    owed = [
        (thread_id, checkpoint_ns, ch, v)
        for ch, v in versions.items()
        if isinstance(v, str) and _MARK in v and ch not in new_versions
    ]
    owed = [key for key in owed if key not in written]
    if not owed:
        return new_versions, []
    return {**new_versions, **{ch: v for _, _, ch, v in owed}}, owed
