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
    "ThreadBusyError",
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


class ThreadBusyError(DualSaverError):
    """With ``exclusive_runs``, a run would write a thread another run is using;
    nothing was written.

    ``reason`` is ``"busy"`` (``holder`` holds the thread's lease and is still within
    it) or ``"moved"`` (another run, ``holder`` if known, wrote a newer checkpoint since
    this run read the thread: its state is stale, so it must start again from the
    thread's latest).
    """

    def __init__(self, thread_id: str, holder: str, reason: str = "busy") -> None:
        self.thread_id = thread_id
        self.holder = holder
        self.reason = reason
        if reason == "moved":
            message = (
                f"thread {thread_id!r} moved on: run {holder or 'unknown'!r} wrote it after "
                "this run read it, so this run's state is stale; nothing was written (run "
                "again from the thread's latest checkpoint)"
            )
        else:
            message = (
                f"thread {thread_id!r} is busy: run {holder!r} holds it; nothing was "
                "written (exclusive_runs; on_busy='wait' waits for it instead)"
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[type[ThreadBusyError], tuple[str, str, str]]:
        return (type(self), (self.thread_id, self.holder, self.reason))


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
