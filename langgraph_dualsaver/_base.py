"""The sync half of the saver interface, written once over the async half, and the
serializer every saver decodes with unless given its own."""

from __future__ import annotations

import asyncio
import copy
import functools
from collections import deque
from collections.abc import (
    AsyncGenerator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.event_hooks import SerdeEvent, register_serde_event_listener
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from typing_extensions import Self

from langgraph_dualsaver._loops import run_sync
from langgraph_dualsaver._paging import SYNC_CHUNK, page_sizes, take
from langgraph_dualsaver.compression import (
    DEFAULT_COMPRESSION,
    Compression,
    user_serde,
    with_compression,
)
from langgraph_dualsaver.errors import ConfigurationError, UnsafeValueError
from langgraph_dualsaver.offload.serde import with_offload, without_offload
from langgraph_dualsaver.offload.store import Offload
from langgraph_dualsaver.records import DEFAULT_LIMITS, Limits, config_fields, next_version
from langgraph_dualsaver.state_upgrades import (
    StateSchema,
    WrittenVersions,
    owed_versions,
    stamp,
    upgrade_tuple,
)

__all__ = ["AsyncFirstSaver", "StrictSerializer", "SyncListing"]

T = TypeVar("T")


# -- strict decoding ----------------------------------------------------------------

_REFUSAL_KINDS = frozenset({"msgpack_blocked", "msgpack_method_blocked"})
_refusals: ContextVar[list[SerdeEvent] | None] = ContextVar("dualsaver_refusals", default=None)


def _note_refusal(event: SerdeEvent) -> None:
    """LangGraph reports each type its strict decoder refuses, however deeply nested;
    keep those of the decode running in this context (events of others are ignored)."""
    found = _refusals.get()
    if found is not None and event["kind"] in _REFUSAL_KINDS:
        found.append(event)


register_serde_event_listener(_note_refusal)


def _dotted(event: SerdeEvent) -> str:
    parts = [event["module"], event["name"], event.get("method", "")]
    return ".".join(part for part in parts if part)


def _refusal_message(events: list[SerdeEvent]) -> str:
    names = sorted({_dotted(e) for e in events})
    keys = sorted({(e["module"], e["name"]) for e in events if e["kind"] == "msgpack_blocked"})
    message = (
        f"refused to decode a stored value holding {', '.join(names)}: only LangGraph and "
        "langchain-core types, and the types you allow, are decoded, so a value crafted in "
        "Redis or PostgreSQL cannot run code. Nothing it names was imported or called."
    )
    if keys:
        allow = ", ".join(repr(key) for key in keys)
        message += (
            f" If you trust it, allow it: saver.with_allowlist([{allow}]), or pass "
            f"serde=StrictSerializer(allowed_msgpack_modules=[{allow}])."
        )
    if len(keys) < len(names):
        message += " A method call other than LangGraph's own cannot be allowed."
    return message


class StrictSerializer(JsonPlusSerializer):
    """LangGraph's ``JsonPlusSerializer`` in its strict mode, whatever
    ``LANGGRAPH_STRICT_MSGPACK`` says: it decodes LangGraph's safe types
    (``SAFE_MSGPACK_TYPES``: langchain-core messages, ``Send``, ``Interrupt``,
    ``Command``, datetimes, ...) and ``allowed_msgpack_modules``, which
    ``with_allowlist`` extends.

    Where LangGraph's strict decoder logs a refused type and returns its raw fields in its
    place, this one raises ``UnsafeValueError`` naming it: a value that silently comes back
    as a dict instead of the user's model corrupts state far from the cause, and a refused
    type means the store holds what this application never wrote (a crafted value) or a
    type missing from the allowlist; both need a person. Pickle is refused the same way.
    """

    def __init__(
        self, *, allowed_msgpack_modules: Iterable[tuple[str, ...] | type] | None = None
    ) -> None:
        super().__init__(allowed_msgpack_modules=allowed_msgpack_modules)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        if data[0] == "pickle" and not self.pickle_fallback:
            raise UnsafeValueError(
                "refused to decode a stored 'pickle' value: unpickling can run any code, "
                "and the savers never write pickle"
            )
        token = _refusals.set([])
        try:
            value = super().loads_typed(data)
            refused = _refusals.get()
        finally:
            _refusals.reset(token)
        if refused:
            raise UnsafeValueError(_refusal_message(refused))
        return value


# -- the saver base -----------------------------------------------------------------


class AsyncFirstSaver(BaseCheckpointSaver[str]):
    """A saver whose logic is async; every sync method runs its ``a*`` twin.

    Subclasses implement the ``a*`` methods and may override ``home_loop`` to name the
    loop a caller-owned client is bound to. Without ``serde=`` values are decoded by a
    ``StrictSerializer``: Redis and PostgreSQL may be written by others, so what they hold
    is not trusted to name code to run.

    With a ``state_schema``, every saver kind stamps its version on ``put`` and upgrades
    older checkpoints on ``get_tuple`` and ``list``: the ``aget_tuple``, ``alist`` and
    ``aput`` a subclass defines are wrapped here, once, so no read path can miss it
    (see ``state_upgrades``).
    """

    def __init__(
        self,
        *,
        serde: SerializerProtocol | None = None,
        limits: Limits | None = None,
        state_schema: StateSchema | None = None,
        compression: Compression | None = DEFAULT_COMPRESSION,
        offload: Offload | None = None,
    ):
        self.limits = limits or DEFAULT_LIMITS
        self.compression = compression
        self.offload = offload
        super().__init__(serde=self._compressing(serde or StrictSerializer()))
        if state_schema is not None and not isinstance(state_schema, StateSchema):
            raise ConfigurationError(
                f"state_schema must be a StateSchema, got {type(state_schema).__name__}"
            )
        self.state_schema = state_schema
        self._written_versions = WrittenVersions()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, wrap in _SCHEMA_WRAPPERS.items():
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "_applies_state_schema", False):
                setattr(cls, name, wrap(method))

    def _compressing(self, serde: SerializerProtocol) -> SerializerProtocol:
        """``serde`` wrapped per ``compression``: values read either way (see
        ``compression``); inside an ``EncryptedSerializer``, compressed before encrypted.
        With ``offload``, large stored bytes then go to the object store (``offload``)."""
        limit = self.limits.max_value_bytes
        compressing = with_compression(without_offload(serde), self.compression, limit)
        return with_offload(compressing, self.offload, limit)

    def with_allowlist(self, extra_allowlist: Any) -> Self:
        """LangGraph's, applied to the user's serde under the compression wrapper."""
        plain = copy.copy(self)
        plain.serde = user_serde(without_offload(self.serde))
        allowed = BaseCheckpointSaver.with_allowlist(plain, extra_allowlist)
        if allowed is plain:
            return self
        allowed.serde = self._compressing(allowed.serde)
        return allowed  # type: ignore[return-value]

    def home_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the caller's own client is bound to, once known; sync calls
        run there. ``None``: the saver opens its own connections on any loop."""
        return None

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        return run_sync(coro, self.home_loop())

    if TYPE_CHECKING:
        # Every saver's listing is an async generator, which ``list`` and the chain close.
        def alist(
            self,
            config: RunnableConfig | None,
            *,
            filter: dict[str, Any] | None = None,
            before: RunnableConfig | None = None,
            limit: int | None = None,
        ) -> AsyncGenerator[CheckpointTuple, None]: ...

    def get_next_version(self, current: str | None, channel: None = None) -> str:
        return next_version(current)

    # -- the sync bridge ------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """``alist``, streamed: see ``SyncListing``."""
        return SyncListing(self, self.alist(config, filter=filter, before=before, limit=limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._sync(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._sync(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._sync(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._sync(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._sync(self.aprune(thread_ids, strategy=strategy))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self._sync(self.aget_delta_channel_history(config=config, channels=channels))

    def setup(self) -> None:
        self._sync(self.asetup())

    def close(self) -> None:
        self._sync(self.aclose())

    # -- ``async with saver`` / ``with saver`` closes what it opened -----------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def asetup(self) -> None:
        """Create or migrate what the store needs. Idempotent."""

    async def aclose(self) -> None:
        """Close the connections this saver opened (never the caller's)."""


# -- state schemas: applied to what every saver kind reads and writes -----------------


def _upgrading_get(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def aget_tuple(self: AsyncFirstSaver, config: RunnableConfig) -> CheckpointTuple | None:
        found: CheckpointTuple | None = await method(self, config)
        if found is None or self.state_schema is None:
            return found
        return upgrade_tuple(found, self.state_schema)

    aget_tuple._applies_state_schema = True  # type: ignore[attr-defined]
    return aget_tuple


def _upgrading_list(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def alist(
        self: AsyncFirstSaver, *args: Any, **kwargs: Any
    ) -> AsyncGenerator[CheckpointTuple, None]:
        items: AsyncGenerator[CheckpointTuple, None] = method(self, *args, **kwargs)
        return items if self.state_schema is None else _upgraded(items, self.state_schema)

    alist._applies_state_schema = True  # type: ignore[attr-defined]
    return alist


async def _upgraded(
    items: AsyncGenerator[CheckpointTuple, None], schema: StateSchema
) -> AsyncGenerator[CheckpointTuple, None]:
    async with aclosing(items):
        async for item in items:
            yield upgrade_tuple(item, schema)


def _stamping_put(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def aput(
        self: AsyncFirstSaver,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        if self.state_schema is None:  # nothing read was upgraded: no version is owed
            saved: RunnableConfig = await method(self, config, checkpoint, metadata, new_versions)
            return saved
        metadata = stamp(metadata, self.state_schema)  # type: ignore[assignment]
        configurable = config_fields(config)
        thread_id = configurable.get("thread_id")
        owed: list[tuple[str, str, str, str]] = []
        if isinstance(thread_id, str):
            ns = configurable.get("checkpoint_ns") or ""
            new_versions, owed = owed_versions(
                thread_id, ns, checkpoint, new_versions, self._written_versions
            )
        saved = await method(self, config, checkpoint, metadata, new_versions)
        for key in owed:
            self._written_versions.add(key)
        return saved

    aput._applies_state_schema = True  # type: ignore[attr-defined]
    return aput


_SCHEMA_WRAPPERS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "aget_tuple": _upgrading_get,
    "alist": _upgrading_list,
    "aput": _stamping_put,
}


class SyncListing(Iterator[CheckpointTuple]):
    """The sync ``list``: the async listing, fetched a chunk per bridge call.

    Chunks double from one item up to ``SYNC_CHUNK``, so the first item costs what the
    async listing's first item costs (a page per tier), and memory holds a chunk and a
    page. Closing it, or dropping it unfinished (a loop broken out of), closes the
    async listing on its event loop: nothing is left running.
    """

    def __init__(
        self, saver: AsyncFirstSaver, items: AsyncGenerator[CheckpointTuple, None]
    ) -> None:
        self._saver = saver
        self._items = items
        self._loop: asyncio.AbstractEventLoop | None = None  # set once started
        self._chunk: deque[CheckpointTuple] = deque()
        self._sizes = page_sizes(1, SYNC_CHUNK)
        self._open = True

    def __next__(self) -> CheckpointTuple:
        if not self._chunk and self._open:
            size = next(self._sizes)
            try:
                taken = self._saver._sync(self._take(size))
            except Exception:
                self._open = False  # the listing raised, so it is finished
                raise
            self._open = len(taken) == size
            self._chunk.extend(taken)
        if not self._chunk:
            raise StopIteration
        return self._chunk.popleft()

    async def _take(self, count: int) -> list[CheckpointTuple]:
        """Up to ``count`` items, on the loop the listing runs on (remembered)."""
        self._loop = asyncio.get_running_loop()
        return await take(self._items, count)

    def close(self) -> None:
        """Stop early: the async listing is closed before this returns."""
        self._chunk.clear()
        started = self._open and self._loop is not None
        self._open = False
        if started:
            self._saver._sync(self._items.aclose())

    def __del__(self) -> None:
        # Dropped unfinished: close the listing on its loop, without waiting, since
        # this may run on any thread, that loop's own included.
        if self._open and self._loop is not None and not self._loop.is_closed():
            self._open = False
            closing = self._items.aclose()
            try:
                asyncio.run_coroutine_threadsafe(closing, self._loop)
            except RuntimeError:  # the loop closed meanwhile (interpreter shutdown)
                closing.close()
