"""Offload of large values to object storage: ``Offload`` (the setting and the store),
the serde wrapper that moves values there, and ``gc``, which collects what nothing
references any more."""

from langgraph_dualsaver.offload.serde import (
    OffloadedValueMissingError,
    OffloadNotConfiguredError,
)
from langgraph_dualsaver.offload.store import ObjectStoreUnavailableError, Offload

__all__ = [
    "ObjectStoreUnavailableError",
    "Offload",
    "OffloadNotConfiguredError",
    "OffloadedValueMissingError",
]
