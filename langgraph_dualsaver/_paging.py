"""What the tiers' streamed listings share: page sizes, the list order, taking a page.

``list`` reads each tier in pages, so memory is bounded by a page, not by the history.
Pages start small, so the first checkpoint comes after a few rows (LangGraph's
``get_state_history`` often stops early), and double up to ``MAX_PAGE`` rows, so a long
listing costs few round trips, but hold no more rows than fit in ``PAGE_BYTES`` at the
size of the rows read so far: large checkpoints come a few at a time.

Every listing is in one order: ``checkpoint_id`` descending (ids are uuid6, so newest
first, across threads too), then ``thread_id`` and ``checkpoint_ns`` ascending, compared
as ``str`` (PostgreSQL's ``COLLATE "C"``, bytewise, is the same order).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

from langgraph.checkpoint.base import CheckpointTuple

__all__ = [
    "FIRST_PAGE",
    "MAX_PAGE",
    "PAGE_BYTES",
    "SYNC_CHUNK",
    "ListKey",
    "PageSizer",
    "comes_after",
    "list_key",
    "page_sizes",
    "take",
]

T = TypeVar("T")

FIRST_PAGE = 4
"""Checkpoints in the first page a tier reads."""

MAX_PAGE = 1024
"""Most checkpoints (with their values) a tier reads in one round trip."""

SYNC_CHUNK = 16
"""Most checkpoints the sync ``list`` takes from the async listing per bridge call."""

PAGE_BYTES = 8 << 20
"""Bytes a page aims at, once the rows' size is known (a page holds one row at least,
however large)."""

ListKey = tuple[str, str, str]
"""``(checkpoint_id, thread_id, checkpoint_ns)``: a checkpoint's place in a listing."""


def page_sizes(first: int, most: int) -> Iterator[int]:
    """``first``, doubling up to ``most``, then ``most`` forever."""
    size = first
    while True:
        yield size
        size = min(size * 2, most)


class PageSizer:
    """The row counts of one listing's pages: ``FIRST_PAGE``, doubling up to
    ``MAX_PAGE``, each page no larger than ``PAGE_BYTES`` at the mean size of the last
    page's rows."""

    def __init__(self) -> None:
        self._size = FIRST_PAGE

    @property
    def size(self) -> int:
        """Rows to read in the next page."""
        return self._size

    def read(self, rows: int, size_bytes: int) -> None:
        """Note a page just read: ``rows`` rows taking about ``size_bytes`` in all."""
        size = min(self._size * 2, MAX_PAGE)
        if rows and size_bytes:
            size = min(size, max(1, PAGE_BYTES * rows // size_bytes))
        self._size = size


def list_key(item: CheckpointTuple) -> ListKey:
    conf = item.config["configurable"]
    return conf["checkpoint_id"], conf["thread_id"], conf.get("checkpoint_ns", "")


def comes_after(key: ListKey, other: ListKey) -> bool:
    """Whether ``key`` is listed after ``other`` (older, or the same id in a later
    thread or namespace)."""
    return key[0] < other[0] or (key[0] == other[0] and key[1:] > other[1:])


async def take(items: AsyncIterator[T], count: int) -> list[T]:
    """The next ``count`` items (fewer when ``items`` ends)."""
    taken: list[T] = []
    while len(taken) < count:
        try:
            taken.append(await items.__anext__())
        except StopAsyncIteration:
            break
    return taken
