"""``RedisConnection``: one Redis or Valkey deployment as the hot tier uses it.

The saver, its listing and admin code, and the chain's outbox all talk to Redis through
this object: a client per event loop (or the caller's own client), the package's Lua
scripts loaded on demand, and every redis-py error mapped to this package's (an outage
to ``StoreUnavailableError``, bad credentials to ``ConfigurationError``, a script's own
refusal to ``DualSaverError``), so no caller handles redis-py's exceptions itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from redis import exceptions as rex
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import parse_url

from langgraph_dualsaver._loops import LoopLocal
from langgraph_dualsaver.auth_errors import REDIS_AUTH_ERRORS, redis_auth_error
from langgraph_dualsaver.errors import ConfigurationError, DualSaverError, StoreUnavailableError
from langgraph_dualsaver.hot.scripts import ALL_SCRIPTS, Script
from langgraph_dualsaver.redact import redact, unparsable
from langgraph_dualsaver.settings import Timeouts

__all__ = ["Client", "RedisConnection"]

Client = Redis | RedisCluster

_UNAVAILABLE = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ClusterDownError,
    rex.SlotNotCoveredError,
    OSError,
)
_IN_TRANSITION = (
    rex.ClusterError,  # CLUSTERDOWN, MASTERDOWN; redirects past redis-py's TTL
    rex.AskError,  # and MOVED, once redis-py stops following them
    rex.TryAgainError,
    rex.ReadOnlyError,  # a write reached a master since demoted
)
"""Answers of a cluster in a failover or a resharding: unavailable for now, like a
connection error, not a fault of the call (they subclass ``ResponseError``)."""
_REDIS_PY = str(Path(redis.__file__).parent)


class RedisConnection:
    """A client per event loop for one deployment, with the package's error mapping.

    Args:
        client: A ``redis.asyncio.Redis`` or ``RedisCluster`` (``decode_responses``
            off). The caller owns it; it is never closed here.
        url: Or a URL (``redis://``, ``rediss://``; ``cluster=True`` for Redis
            Cluster): one client per event loop, closed in ``aclose``.
        max_connections: Connections per event loop; past them a call waits for one.
        timeouts: Connect and command timeouts; past them ``StoreUnavailableError``.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        url: str | None = None,
        cluster: bool = False,
        max_connections: int = 100,
        timeouts: Timeouts,
    ) -> None:
        if (client is None) == (url is None):
            raise ConfigurationError("give exactly one of client= or url=")
        self.timeouts = timeouts
        self.max_connections = max_connections
        self.connections_opened = 0
        """Connections opened so far: each may reach a restarted server."""
        self._gates: dict[asyncio.AbstractEventLoop, _Turns] = {}
        self._clients: LoopLocal[Client]
        self._url: str | None = None
        if client is not None:
            if client.get_connection_kwargs().get("decode_responses"):
                raise ConfigurationError("the client must have decode_responses=False")
            self.cluster = isinstance(client, RedisCluster)
            self.where = "the given client"
            self._clients = LoopLocal(fixed=client)
            return
        assert url is not None
        for scheme in ("redis+cluster://", "rediss+cluster://"):
            if url.startswith(scheme):
                url, cluster = url.replace("+cluster", "", 1), True
        try:
            parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        except ValueError:
            raise unparsable("Redis", url) from None
        self._url = url
        self.cluster = cluster
        self.where = redact(url)
        """Where the server is, for messages (no password)."""
        self._clients = LoopLocal(open=self._open, close=self._close)

    # -- clients ------------------------------------------------------------------

    async def client(self) -> Client:
        """The client of the running event loop."""
        return await self._clients.get()

    @property
    def home_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop a caller-owned client is bound to, once known."""
        return self._clients.home

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def _open(self) -> Client:
        assert self._url is not None
        options: dict[str, Any] = {
            "socket_connect_timeout": self.timeouts.connect_s,
            "socket_timeout": self.timeouts.command_s,
            # One retry, on a dropped connection only (a restarted server leaves stale
            # pooled connections); a timeout is final, so a paused server costs one
            # command timeout, not redis-py's default retries.
            "retry": Retry(NoBackoff(), 1, supported_errors=(rex.ConnectionError,)),
            "decode_responses": False,
        }
        if self.cluster:
            cluster = RedisCluster.from_url(self._url, **options)
            self._count_connections_of(cluster)
            return cluster
        # A plain pool: redis-py's BlockingConnectionPool takes an asyncio.Condition and
        # a timeout per command, about 15 % of the client's CPU per call (measured in
        # benchmarks/results/redis_clients.md). Calls through ``eval``/``pipeline`` wait
        # for one of ``max_connections`` at the gate instead; the pool's own limit is
        # kept above it for the direct reads (outbox, listing), so they never fail on it.
        pool = ConnectionPool.from_url(
            self._url,
            max_connections=2 * self.max_connections,
            redis_connect_func=self._count_connection,
            **options,
        )
        return Redis.from_pool(pool)

    def _count_connections_of(self, cluster: RedisCluster) -> None:
        """Count each node's new connections as the single-server pool does: one may
        reach a master that restarted. RedisCluster takes no connect hook, so it goes in
        the kwargs node connections are built from: the template kept for nodes found
        later, and the startup nodes already built from it."""
        cluster.get_connection_kwargs()["redis_connect_func"] = self._count_connection
        for node in cluster.nodes_manager.startup_nodes.values():
            node.connection_kwargs["redis_connect_func"] = self._count_connection

    async def _count_connection(self, connection: Any) -> None:
        await connection.on_connect()
        self.connections_opened += 1

    @staticmethod
    async def _close(client: Client) -> None:
        await client.aclose()

    # -- calls --------------------------------------------------------------------

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Map redis-py's exceptions raised inside the block to this package's."""
        try:
            yield
        except DualSaverError:
            raise
        except rex.OutOfMemoryError as exc:
            raise StoreUnavailableError(f"redis at {self.where} is out of memory: {exc}") from exc
        except REDIS_AUTH_ERRORS as exc:  # a setting to fix, not an outage
            raise redis_auth_error(exc, f"redis at {self.where}") from exc
        except _IN_TRANSITION as exc:
            raise StoreUnavailableError(
                f"redis cluster at {self.where} is in transition: {exc}"
            ) from exc
        except (AttributeError, TypeError) as exc:
            if not _raised_in_redis_py(exc):
                raise
            # redis-py's own state broken under a call: a cluster client's aclose()
            # (its reaction to a failover) disconnects the connections in use too
            raise StoreUnavailableError(
                f"redis at {self.where} is unavailable: the client failed mid-call ({exc!r})"
            ) from exc
        except rex.ResponseError as exc:
            if "DUALSAVER" in str(exc):
                raise DualSaverError(str(exc).split("DUALSAVER", 1)[1].strip()) from exc
            raise
        except (*_UNAVAILABLE, rex.RedisClusterException) as exc:
            if isinstance(exc, rex.RedisClusterException) and not (
                isinstance(exc, rex.SlotNotCoveredError) or "cannot be connected" in str(exc)
            ):
                raise  # API misuse, not an outage
            raise StoreUnavailableError(
                f"redis at {self.where} is unavailable: {exc or type(exc).__name__}"
            ) from exc

    async def load_scripts(self, client: Client | None = None) -> None:
        client = client or await self.client()
        for script in ALL_SCRIPTS:
            await client.script_load(script.body)

    def _gate(self) -> _Turns:
        """This loop's ``max_connections`` turns (a plain dict: the lookup is on every
        call; entries of closed loops go when a new loop comes)."""
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            for old in [known for known in self._gates if known.is_closed()]:
                del self._gates[old]
            gate = self._gates[loop] = _Turns(self.max_connections)
        return gate

    async def _take_turn(self, gate: _Turns) -> None:
        """Wait for a turn once every one is taken: at most the command timeout, instead
        of failing at once as redis-py's pool does (seen with 64 concurrent graph runs)."""
        if gate.take_free():
            return
        if not await gate.wait(self.timeouts.command_s):
            raise StoreUnavailableError(
                f"redis at {self.where}: all {self.max_connections} connections stayed "
                f"busy for {self.timeouts.command_s:g}s"
            )

    async def eval(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one of the package's scripts (loading them if the server lost them)."""
        client = await self.client()
        gate = self._gate()
        await self._take_turn(gate)
        try:
            return await self._eval(client, script, keys, args)
        finally:
            gate.give()

    async def _eval(
        self, client: Client, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        with self.errors():
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except rex.NoScriptError:
                await self.load_scripts(client)
                return await client.evalsha(script.sha, len(keys), *keys, *args)

    async def pipeline(self, build: Callable[[Any], object]) -> list[Any]:
        """A non-transactional pipeline that ``build`` fills: one round trip on a single
        server. An error returned as one of its replies is raised."""
        client = await self.client()
        gate = self._gate()
        await self._take_turn(gate)
        try:
            return await self._pipeline(client, build)
        finally:
            gate.give()

    async def _pipeline(self, client: Client, build: Callable[[Any], object]) -> list[Any]:
        with self.errors():
            for attempt in (1, 2):
                pipe = client.pipeline(transaction=False)
                build(pipe)
                try:
                    replies = await pipe.execute()
                except rex.NoScriptError:
                    if attempt == 2:
                        raise
                    await self.load_scripts(client)
                    continue
                failed = next((r for r in replies if isinstance(r, BaseException)), None)
                if failed is not None:  # an error returned as a reply is still an error
                    raise failed
                return replies
        raise AssertionError("unreachable")


class _Turns:
    """At most ``size`` calls at once, the rest waiting in order. A counter, not an
    ``asyncio.Semaphore``: a free turn costs two integer operations (profiled: the
    semaphore's ``locked()`` check alone was 4 % of a write_behind step)."""

    __slots__ = ("free", "waiting")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiting: deque[asyncio.Future[None]] = deque()

    def take_free(self) -> bool:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return True
        return False

    async def wait(self, timeout: float) -> bool:
        """Wait for a turn ``give`` hands over; ``False`` if none came in ``timeout``."""
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), timeout)
            return True
        except asyncio.TimeoutError:
            self._abandon(turn)
            return False
        except BaseException:  # the caller was cancelled: its turn must not be lost
            self._abandon(turn)
            raise

    def _abandon(self, turn: asyncio.Future[None]) -> None:
        if turn.done() and not turn.cancelled():
            self.give()  # handed over as the wait ended: pass it on
        turn.cancel()

    def give(self) -> None:
        """End a call's turn: hand it to the first caller still waiting, if any."""
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.free += 1


def _raised_in_redis_py(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by redis-py's own code, not by this package's."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(_REDIS_PY)
