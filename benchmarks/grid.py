"""The parameter grids: ``quick`` (about a minute) and ``full`` (under ten minutes)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GRIDS", "Grid"]

KB = 1024
MB = 1024 * KB


@dataclass(frozen=True)
class Grid:
    """How much of everything to run. Sample counts are per saver and per point."""

    name: str
    graph_concurrency: tuple[int, ...]
    graph_invokes: int
    """Invokes per concurrency level and round (at least one per concurrent thread)."""
    graph_rounds: int
    """Rounds of the graph measure, savers interleaved (rotated each round): the figure is
    the median round, so a burst of load on a shared machine hits one round of each."""
    op_samples: int
    history_lengths: tuple[int, ...]
    history_samples: int
    state_sizes: tuple[int, ...]
    state_samples: int
    """Samples at 1 KB; fewer at larger sizes (see ``samples_for_size``)."""
    conversation_messages: int
    conversation_budget_s: float
    """A conversation that gets this slow stops early (and the report says so)."""
    floor_samples: int
    chain_load_seconds: float
    chain_writers: int
    cold_threads: int
    warmup: int = 3

    def samples_for_size(self, size: int) -> int:
        """Fewer samples for big states: a 10 MB put is slow everywhere."""
        if size >= 10 * MB:
            return max(3, self.state_samples // 10)
        if size >= MB:
            return max(5, self.state_samples // 4)
        return self.state_samples


GRIDS: dict[str, Grid] = {
    "quick": Grid(
        name="quick",
        graph_concurrency=(1, 16),
        graph_invokes=16,
        graph_rounds=1,
        op_samples=20,
        history_lengths=(10, 100),
        history_samples=10,
        state_sizes=(1 * KB, 100 * KB),
        state_samples=8,
        conversation_messages=20,
        conversation_budget_s=15.0,
        floor_samples=50,
        chain_load_seconds=1.0,
        chain_writers=4,
        cold_threads=5,
        warmup=2,
    ),
    "full": Grid(
        name="full",
        graph_concurrency=(1, 16, 64),
        graph_invokes=32,
        graph_rounds=3,
        op_samples=100,
        history_lengths=(10, 100, 1_000, 10_000),
        history_samples=20,
        state_sizes=(1 * KB, 10 * KB, 100 * KB, 1 * MB, 10 * MB),
        state_samples=20,
        conversation_messages=500,
        conversation_budget_s=30.0,
        floor_samples=500,
        chain_load_seconds=5.0,
        chain_writers=16,
        cold_threads=40,
    ),
}
