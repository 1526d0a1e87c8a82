"""Typed settings shared by the savers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

__all__ = ["Timeouts"]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a store may take before the saver gives up and raises
    ``StoreUnavailableError``. An unreachable store costs ``connect``; a store that
    accepts the connection but does not answer (paused, partitioned) costs ``command``.
    Not redis-py's default of 5 s times 10 retries: a checkpointer on the request path
    must fail fast.
    """

    connect: timedelta = timedelta(seconds=1)
    command: timedelta = timedelta(seconds=2)

    @property
    def connect_s(self) -> float:
        return self.connect.total_seconds()

    @property
    def command_s(self) -> float:
        return self.command.total_seconds()
