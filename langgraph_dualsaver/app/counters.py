"""Per-node run counters, kept outside the graph state and outside the checkpointer.

They answer "did this node's body run again?" after a crash or a resume: the graph
state could not, because a resumed run restores it from the checkpoint. With a
``path``, the counts live in a JSON file guarded by ``flock``, so a child process that
is killed and the process that resumes after it add to the same numbers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RunCounters"]


class RunCounters:
    """How many times each node's body started, per thread.

    Args:
        path: A JSON file shared between processes; ``None`` keeps the counts in memory.
    """

    __slots__ = ("_lock", "_memory", "path")

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._memory: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def increment(self, thread_id: str, node: str) -> int:
        """Count one run of ``node`` on ``thread_id``; return the new count."""
        with self._open() as counts:
            per_node = counts.setdefault(thread_id, {})
            per_node[node] = per_node.get(node, 0) + 1
            return per_node[node]

    def get(self, thread_id: str) -> dict[str, int]:
        """The counts of one thread, by node (nodes that never ran are absent)."""
        with self._open() as counts:
            return dict(counts.get(thread_id, {}))

    def reset(self, thread_id: str) -> None:
        with self._open() as counts:
            counts.pop(thread_id, None)

    @contextlib.contextmanager
    def _open(self) -> Iterator[dict[str, dict[str, int]]]:
        with self._lock:
            if self.path is None:
                yield self._memory
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+", encoding="utf-8") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    handle.seek(0)
                    text = handle.read()
                    counts = json.loads(text) if text.strip() else {}
                    before = json.dumps(counts, sort_keys=True)
                    yield counts
                    after = json.dumps(counts, sort_keys=True)
                    if after != before:
                        handle.seek(0)
                        handle.truncate()
                        handle.write(after)
                        handle.flush()
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
