"""The package's exceptions: one root, and subclasses that also inherit the built-in
exception a caller would naturally catch (``ValueError``, ``ConnectionError``, ...)."""

from __future__ import annotations

__all__ = [
    "CheckpointTooLargeError",
    "ConfigurationError",
    "DualSaverError",
    "DurableWriteError",
    "EmbeddedServerError",
    "EventLoopError",
    "InvalidIdError",
    "InvalidInputError",
    "InvalidMetadataError",
    "MissingThreadIdError",
    "MissingUpgradeError",
    "SchemaTooNewError",
    "SerializationError",
    "StateSchemaError",
    "StoreAuthenticationError",
    "StoreUnavailableError",
    "UnsafeRedisConfigError",
    "UnsafeValueError",
    "UpgradeFailedError",
]


class DualSaverError(Exception):
    """Root of every error raised by langgraph-dualsaver."""


class InvalidInputError(DualSaverError, ValueError):
    """Input rejected before any I/O; nothing was written."""


class MissingThreadIdError(InvalidInputError, KeyError):
    """The config has no ``thread_id``, or it is empty."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else "missing thread_id"


class InvalidIdError(InvalidInputError):
    """A thread, namespace or checkpoint id is not a string, holds NUL, or is too long."""


class InvalidMetadataError(InvalidInputError):
    """Checkpoint metadata holds NUL characters or values JSON cannot represent."""


class CheckpointTooLargeError(InvalidInputError):
    """A serialized value is over the configured size cap."""


class SerializationError(InvalidInputError, TypeError):
    """The serializer could not encode a value."""


class ConfigurationError(DualSaverError, ValueError):
    """The saver was configured wrongly (bad URL, missing extra, bad option)."""


class UnsafeRedisConfigError(ConfigurationError):
    """The Redis server's settings could drop data the saver relies on."""


class EventLoopError(DualSaverError, RuntimeError):
    """A call was made from an event loop it cannot run on (it would deadlock)."""


class StoreUnavailableError(DualSaverError, ConnectionError):
    """A store could not be reached within the configured timeout."""


class DurableWriteError(StoreUnavailableError):
    """A write_through ``put`` could not commit to PostgreSQL; the entry stays queued."""


class UnsafeValueError(DualSaverError, ValueError):
    """A stored value names a type the serde does not allow, so it was not decoded.

    Nothing the value names was imported or called. Raised on read, after I/O.
    """


class EmbeddedServerError(DualSaverError, RuntimeError):
    """An embedded server did not start; the message says why and what to do.

    ``pid`` is the process started for it, if one was: it is stopped before this is
    raised.
    """

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class StoreAuthenticationError(ConfigurationError):
    """A store refused the credentials in its URL (or its user's rights): a setting to
    fix, not an outage to wait out."""


class StateSchemaError(DualSaverError, ValueError):
    """A checkpoint cannot be read at this code's state schema version; nothing is
    returned and nothing stored is changed."""


class SchemaTooNewError(StateSchemaError):
    """A checkpoint was written under a newer state schema than this code's: it is
    refused, never downgraded."""


class MissingUpgradeError(StateSchemaError):
    """No chain of upgrades leads from a checkpoint's state schema version to this
    code's: ``StateSchema.upgrades`` has a gap."""


class UpgradeFailedError(StateSchemaError):
    """An upgrade function raised, or returned something other than state keys."""
