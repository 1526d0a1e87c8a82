"""The sync half of the saver interface, written once over the async half."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

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
from typing_extensions import Self

from langgraph_dualsaver._loops import run_sync
from langgraph_dualsaver.records import DEFAULT_LIMITS, Limits, next_version

__all__ = ["AsyncFirstSaver"]


class AsyncFirstSaver(BaseCheckpointSaver[str]):
    """A saver whose logic is async; every sync method runs its ``a*`` twin.

    Subclasses implement the ``a*`` methods and may set ``_home_loop`` to the loop a
    caller-owned client is bound to.
    """

    def __init__(self, *, serde: SerializerProtocol | None = None, limits: Limits | None = None):
        super().__init__(serde=serde)
        self.limits = limits or DEFAULT_LIMITS

    def _home_loop(self) -> asyncio.AbstractEventLoop | None:
        return None

    def _sync(self, coro: Any) -> Any:
        return run_sync(coro, self._home_loop())

    async def _collect(self, iterator: AsyncIterator[CheckpointTuple]) -> list[CheckpointTuple]:
        return [item async for item in iterator]

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
        items = self._sync(
            self._collect(self.alist(config, filter=filter, before=before, limit=limit))
        )
        return iter(items)

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
