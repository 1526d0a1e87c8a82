"""Event loops: per-loop resources for the async API, one bridge for the sync API.

The savers are written once, async. Connections (asyncpg pools, redis.asyncio clients)
belong to the event loop that opened them, so a saver keeps one set per loop
(``LoopLocal``): two ``asyncio.run`` calls in a row, pytest-asyncio's per-test loops and
a Jupyter kernel's loop each get their own. The sync methods run the async ones on a
private loop in a daemon thread (``run_sync``), so ``graph.invoke`` works anywhere,
including inside a running loop in the caller's thread.

Clients the caller passes in stay on the loop they were first used on. A sync call from
that loop's own thread cannot wait for it without deadlocking, so it raises
``EventLoopError`` instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from langgraph_dualsaver.errors import EventLoopError

__all__ = ["LoopLocal", "run_sync"]

T = TypeVar("T")
R = TypeVar("R")


class _BridgeLoop:
    """One daemon thread running one event loop, shared by every saver in the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="dualsaver-sync-bridge", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def is_current_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread


_BRIDGE = _BridgeLoop()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def run_sync(coro: Coroutine[Any, Any, T], home: asyncio.AbstractEventLoop | None = None) -> T:
    """Run ``coro`` to completion from synchronous code and return its result.

    It runs on ``home`` (the loop a caller-owned client is bound to) when given and
    running, otherwise on the bridge loop.
    """
    target = home if home is not None and home.is_running() else _BRIDGE.loop
    if _running_loop() is target or (target is _BRIDGE.loop and _BRIDGE.is_current_thread()):
        coro.close()
        raise EventLoopError(
            "a synchronous saver method was called from inside the event loop that the "
            "saver's connections run on, where waiting would deadlock; "
            "await the async method (aget_tuple, aput, ...) instead"
        )
    return asyncio.run_coroutine_threadsafe(coro, target).result()


class LoopLocal(Generic[R]):
    """A resource per event loop, opened on first use and closed by ``aclose``.

    With ``fixed``, the caller's resource is used as is, on whichever loop first uses it.
    """

    def __init__(
        self,
        open: Callable[[], Awaitable[R]] | None = None,
        close: Callable[[R], Coroutine[Any, Any, None]] | None = None,
        *,
        fixed: R | None = None,
    ) -> None:
        if (open is None) == (fixed is None):
            raise ValueError("give exactly one of open or fixed")
        self._open = open
        self._close = close
        self._fixed = fixed
        self._home: asyncio.AbstractEventLoop | None = None
        self._by_loop: dict[asyncio.AbstractEventLoop, R] = {}
        self._opening: dict[asyncio.AbstractEventLoop, asyncio.Future[R]] = {}
        self._lock = threading.Lock()

    @property
    def home(self) -> asyncio.AbstractEventLoop | None:
        """The loop a caller-owned resource is bound to, once known."""
        return self._home if self._fixed is not None else None

    async def get(self) -> R:
        loop = asyncio.get_running_loop()
        if self._fixed is not None:
            if self._home is None or self._home.is_closed():
                self._home = loop
            elif self._home is not loop:
                raise EventLoopError(
                    "this saver was given a client bound to another event loop; "
                    "create the saver from a URL to use it from several loops"
                )
            return self._fixed
        resource = self._by_loop.get(loop)
        if resource is not None:
            return resource
        pending = self._opening.get(loop)
        if pending is not None:
            return await asyncio.shield(pending)
        self._forget_closed_loops()
        future: asyncio.Future[R] = loop.create_future()
        self._opening[loop] = future
        try:
            assert self._open is not None
            resource = await self._open()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            self._opening.pop(loop, None)
        with self._lock:
            self._by_loop[loop] = resource
        future.set_result(resource)
        return resource

    def _forget_closed_loops(self) -> None:
        with self._lock:
            for loop in [lp for lp in self._by_loop if lp.is_closed()]:
                del self._by_loop[loop]  # its sockets died with it

    async def aclose(self) -> None:
        """Close every owned resource: this loop's directly, others' on their loops."""
        if self._close is None or self._fixed is not None:
            return
        current = asyncio.get_running_loop()
        with self._lock:
            items = list(self._by_loop.items())
            self._by_loop.clear()
        for loop, resource in items:
            if loop is current:
                await self._close(resource)
            elif loop.is_running() and not loop.is_closed():
                # Scheduled, not awaited: that loop's thread may be the very one blocked
                # in a sync ``close()`` waiting for us, and waiting would deadlock.
                asyncio.run_coroutine_threadsafe(self._close(resource), loop)
