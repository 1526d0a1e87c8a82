"""``list`` and ``alist`` stream: the first item comes after one page per tier, not
after the whole history; a full listing is what it always was (newest first, no
duplicates across tiers, ``before``/``limit``/``filter``); and a sync listing broken
out of early leaves nothing running. Every saver kind, on real Valkey and PostgreSQL."""

from __future__ import annotations

import gc
import inspect
import random
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.base.id import uuid6

import langgraph_dualsaver
from langgraph_dualsaver.chain.saver import DualSaver
from tests.factories import SAVER_KINDS, open_saver
from tests.helpers import checkpoint, config, eventually, ids_of, put_chain
from tests.servers import valkey_server

MIB = 1 << 20
HISTORY = 150
FIRST_ITEM_BOUND = 40 * MIB
"""Far below the 150 MiB history: what a first page per tier, decoded, can take."""
FULL_LISTING_BOUND = 64 * MIB
"""A whole pass, items let go as it goes: a page per tier (``PAGE_BYTES`` once the
rows' size is known) and the sync bridge's chunk, never the history."""

PACKAGE_DIR = str(Path(langgraph_dualsaver.__file__).parent)

Key = tuple[str, str, str]
T = TypeVar("T")


def key(item: CheckpointTuple) -> Key:
    conf = item.config["configurable"]
    return conf["checkpoint_id"], conf["thread_id"], conf["checkpoint_ns"]


def list_order(keys: list[Key]) -> list[Key]:
    """Newest id first; the same id by thread, then namespace."""
    return sorted(sorted(keys, key=lambda k: k[1:]), key=lambda k: k[0], reverse=True)


async def listed(saver: BaseCheckpointSaver, cfg: RunnableConfig | None, **kw: Any) -> list[Key]:
    return [key(t) async for t in saver.alist(cfg, **kw)]


def listed_sync(saver: BaseCheckpointSaver, cfg: RunnableConfig | None, **kw: Any) -> list[Key]:
    return [key(t) for t in saver.list(cfg, **kw)]


@pytest.fixture(params=SAVER_KINDS)
async def saver(
    request: pytest.FixtureRequest, redis_url: str, pg_dsn: str, redis_prefix: str
) -> AsyncIterator[BaseCheckpointSaver]:
    async with open_saver(
        request.param, redis_url=redis_url, pg_dsn=pg_dsn, prefix=redis_prefix
    ) as opened:
        yield opened


# -- (a) the first item costs a page per tier --------------------------------------------


async def put_large_history(saver: BaseCheckpointSaver, thread: str) -> str:
    """``HISTORY`` checkpoints, each with its own 1 MiB value; returns the newest id.
    The chain flushes each one, so both tiers hold the whole history to read (and no
    flush batch carries more than a few MiB)."""
    parent = config(thread)
    for step in range(HISTORY):
        # Distinct (no blob is shared between checkpoints) and incompressible, so each
        # stored row is the 1 MiB the pages are sized by, compression on or off.
        value = random.Random(step).randbytes(MIB)
        parent = await saver.aput(
            parent, checkpoint(value, step + 1), {"step": step}, {"x": step + 1}
        )
        if isinstance(saver, DualSaver):
            await saver.aflush()
    return parent["configurable"]["checkpoint_id"]


async def traced_peak(run: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """``run``'s result, and the most memory Python held at once while it ran."""
    tracemalloc.start()
    try:
        result = await run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def first_async(saver: BaseCheckpointSaver, cfg: RunnableConfig) -> str:
    listing = saver.alist(cfg)
    first = await anext(listing)
    await listing.aclose()
    return first.checkpoint["id"]


async def first_sync(saver: BaseCheckpointSaver, cfg: RunnableConfig) -> str:
    listing = saver.list(cfg)
    first = next(listing)
    listing.close()  # type: ignore[attr-defined]
    return first.checkpoint["id"]


async def count_async(saver: BaseCheckpointSaver, cfg: RunnableConfig) -> int:
    return sum([1 async for _ in saver.alist(cfg)])


async def count_sync(saver: BaseCheckpointSaver, cfg: RunnableConfig) -> int:
    return sum(1 for _ in saver.list(cfg))


async def test_listing_holds_a_page_per_tier_not_the_whole_history(
    saver: BaseCheckpointSaver,
) -> None:
    cfg = config(f"large-{uuid.uuid4()}")
    newest = await put_large_history(saver, cfg["configurable"]["thread_id"])
    await saver.aget_tuple(cfg)  # connections opened before measuring: on this loop,
    saver.get_tuple(cfg)  # and on the sync bridge's
    for first in (first_async, first_sync):
        found, peak = await traced_peak(partial(first, saver, cfg))
        assert found == newest
        assert peak < FIRST_ITEM_BOUND, f"{first.__name__}: {peak / MIB:.1f} MiB"
    for count in (count_async, count_sync):
        found, peak = await traced_peak(partial(count, saver, cfg))
        assert found == HISTORY
        assert peak < FULL_LISTING_BOUND, f"{count.__name__}: {peak / MIB:.1f} MiB"


# -- (b) a full listing is what it always was --------------------------------------------

THREADS = 3
NAMESPACES = ("", "child")
SHARED_IDS = 12


async def put_shared_ids(saver: BaseCheckpointSaver) -> tuple[list[str], list[str]]:
    """The same ``SHARED_IDS`` checkpoint ids in every thread and namespace, so pages
    end inside a run of equal ids; returns the threads and the ids, oldest first."""
    threads = [f"shared-{i}-{uuid.uuid4()}" for i in range(THREADS)]
    ids = [str(uuid6(clock_seq=-1)) for _ in range(SHARED_IDS)]
    for thread in threads:
        for ns in NAMESPACES:
            parent = config(thread, ns=ns)
            for step, checkpoint_id in enumerate(ids):
                ckpt = checkpoint(f"{thread}/{ns}/{step}", step + 1)
                ckpt["id"] = checkpoint_id
                parent = await saver.aput(parent, ckpt, {"step": step}, {"x": step + 1})
    return threads, ids


async def assert_lists_both_ways(
    saver: BaseCheckpointSaver, cfg: RunnableConfig | None, expected: list[Key], **kw: Any
) -> None:
    assert await listed(saver, cfg, **kw) == expected
    assert listed_sync(saver, cfg, **kw) == expected


async def test_full_listing_keeps_order_and_arguments_across_threads_and_namespaces(
    saver: BaseCheckpointSaver,
) -> None:
    threads, ids = await put_shared_ids(saver)
    everything = list_order([(i, t, ns) for i in ids for t in threads for ns in NAMESPACES])
    assert len(everything) == THREADS * len(NAMESPACES) * SHARED_IDS

    def where(keep: Callable[[Key], bool]) -> list[Key]:
        return [k for k in everything if keep(k)]

    await assert_lists_both_ways(saver, None, everything)
    for limit in (1, 5, 13, len(everything) + 1):
        await assert_lists_both_ways(saver, None, everything[:limit], limit=limit)
    before = {"configurable": {"checkpoint_id": ids[7]}}
    await assert_lists_both_ways(saver, None, where(lambda k: k[0] < ids[7]), before=before)
    await assert_lists_both_ways(saver, None, where(lambda k: k[0] == ids[4]), filter={"step": 4})
    older = where(lambda k: k[0] < ids[7])[:9]
    await assert_lists_both_ways(saver, None, older, before=before, limit=9)
    one_thread = {"configurable": {"thread_id": threads[1]}}
    await assert_lists_both_ways(saver, one_thread, where(lambda k: k[1] == threads[1]))
    child = config(threads[2], ns="child")
    await assert_lists_both_ways(saver, child, where(lambda k: k[1:] == (threads[2], "child")))
    async for item in saver.alist(None):
        checkpoint_id, thread, ns = key(item)
        assert item.checkpoint["channel_values"] == {
            "x": f"{thread}/{ns}/{ids.index(checkpoint_id)}"
        }


async def put_interleaved(
    saver: DualSaver, threads: list[str], count: int, starts: dict[str, RunnableConfig]
) -> dict[str, list[RunnableConfig]]:
    """``count`` checkpoints per thread, the threads taking turns; each chain goes on
    from ``starts``. Returns each thread's new configs."""
    saved: dict[str, list[RunnableConfig]] = {t: [] for t in threads}
    for step in range(count):
        for thread in threads:
            parent = saved[thread][-1] if saved[thread] else starts[thread]
            ckpt = checkpoint(f"{thread}/{step}", step + 1)
            saved[thread].append(
                await saver.aput(parent, ckpt, {"source": "loop", "step": step}, {"x": step + 1})
            )
    return saved


@dataclass
class Chain:
    """Two threads, each with 10 checkpoints only in PostgreSQL (flushed, evicted from
    Redis), then 10 in both tiers (flushed), then 10 only in Redis (not flushed); one
    checkpoint in both tiers has a pending write only Redis holds."""

    saver: DualSaver
    threads: list[str]
    cold: dict[str, list[RunnableConfig]]
    shared: dict[str, list[RunnableConfig]]
    hot: dict[str, list[RunnableConfig]]
    late: RunnableConfig

    def history(self, thread: str) -> list[RunnableConfig]:
        return self.cold[thread] + self.shared[thread] + self.hot[thread]


@pytest.fixture
async def chain(redis_url: str, pg_dsn: str, redis_prefix: str) -> AsyncIterator[Chain]:
    async with open_saver(
        "dual_write_behind", redis_url=redis_url, pg_dsn=pg_dsn, prefix=redis_prefix,
        background_flush=False,
    ) as saver:  # fmt: skip
        assert isinstance(saver, DualSaver)
        threads = [f"chain-{i}-{uuid.uuid4()}" for i in range(2)]
        cold = await put_interleaved(saver, threads, 10, {t: config(t) for t in threads})
        await saver.aflush()
        for thread in threads:
            await saver.hot.aevict_thread(thread)
        shared = await put_interleaved(saver, threads, 10, {t: cold[t][-1] for t in threads})
        await saver.aflush()
        late = shared[threads[0]][-3]
        await saver.aput_writes(late, [("x", "late")], "task-late")
        hot = await put_interleaved(saver, threads, 10, {t: shared[t][-1] for t in threads})
        yield Chain(saver, threads, cold, shared, hot, late)


def newest_first(thread: str, configs: list[RunnableConfig]) -> list[Key]:
    return [(i, thread, "") for i in reversed(ids_of(configs))]


async def test_chain_tiers_each_hold_part_of_the_history(chain: Chain) -> None:
    main = chain.threads[0]
    durable = await listed(chain.saver.durable, config(main))
    assert durable == newest_first(main, chain.cold[main] + chain.shared[main])
    hot = await listed(chain.saver.hot, config(main))
    assert hot == newest_first(main, chain.shared[main] + chain.hot[main])


async def test_chain_lists_a_thread_across_both_tiers_once_newest_first(chain: Chain) -> None:
    main = chain.threads[0]
    expected = newest_first(main, chain.history(main))
    await assert_lists_both_ways(chain.saver, config(main), expected)
    await assert_lists_both_ways(chain.saver, config(main), expected[:14], limit=14)
    before = {"configurable": {"checkpoint_id": expected[5][0]}}
    await assert_lists_both_ways(chain.saver, config(main), expected[6:18], before=before, limit=12)
    third = [chain.hot[main][3], chain.shared[main][3], chain.cold[main][3]]
    await assert_lists_both_ways(
        chain.saver, config(main), [(i, main, "") for i in ids_of(third)], filter={"step": 3}
    )


async def test_chain_lists_every_thread_across_both_tiers(chain: Chain) -> None:
    everything = list_order([(i, t, "") for t in chain.threads for i in ids_of(chain.history(t))])
    await assert_lists_both_ways(chain.saver, None, everything)
    await assert_lists_both_ways(chain.saver, None, everything[:25], limit=25)


async def test_chain_lists_the_hot_copy_with_its_unflushed_writes(chain: Chain) -> None:
    durable_copy = await chain.saver.durable.aget_tuple(chain.late)
    assert durable_copy is not None and durable_copy.pending_writes == []
    late_id = chain.late["configurable"]["checkpoint_id"]
    listed_copies = [
        t async for t in chain.saver.alist(config(chain.threads[0])) if key(t)[0] == late_id
    ]
    assert [t.pending_writes for t in listed_copies] == [[("task-late", "x", "late")]]


async def test_a_redis_restarted_mid_listing_serves_no_stale_copy(pg_dsn: str) -> None:
    """Redis comes back from a snapshot older than a checkpoint's last write: the rest
    of the listing is reconciled first, so PostgreSQL's copy (with the write) is listed."""
    thread = f"restart-{uuid.uuid4()}"
    with valkey_server() as valkey:
        async with DualSaver.from_conn_string(
            valkey.url, pg_dsn, mode="write_through", background_flush=False
        ) as saver:
            await saver.asetup()
            saved = await put_chain(saver, thread, 30)
            await (await saver.hot.aclient()).save()  # the snapshot Redis comes back from
            await saver.aput_writes(saved[5], [("x", "late")], "task-late")
            listing = saver.alist(config(thread))
            items = [await anext(listing)]
            valkey.kill()
            valkey.start()
            items += [t async for t in listing]
    assert [key(t)[0] for t in items] == list(reversed(ids_of(saved)))
    assert items[-6].pending_writes == [("task-late", "x", "late")]


async def test_a_redis_lost_mid_listing_lists_the_rest_from_postgres(pg_dsn: str) -> None:
    thread = f"lost-{uuid.uuid4()}"
    with valkey_server() as valkey:
        async with DualSaver.from_conn_string(
            valkey.url, pg_dsn, mode="write_through", background_flush=False
        ) as saver:
            await saver.asetup()
            saved = await put_chain(saver, thread, 30)
            listing = saver.alist(config(thread))
            items = [await anext(listing)]
            valkey.kill()
            items += [t async for t in listing]
            assert (await saver.astats()).redis_available is False
    assert [key(t)[0] for t in items] == list(reversed(ids_of(saved)))


# -- (c) a sync listing broken out of early leaves nothing running --------------------


LISTING_GENERATORS = frozenset(
    {"alist", "list_checkpoints", "_pages", "_candidates", "_list_pages", "_hot_listing", "_merged"}
)
"""The async generators a listing runs in (not, say, a background flush's)."""


def suspended_listings() -> list[Any]:
    """The package's listing generators not finished (closed or run to the end)."""
    return [
        obj
        for obj in gc.get_objects()
        if inspect.isasyncgen(obj)
        and obj.ag_frame is not None
        and obj.ag_code.co_filename.startswith(PACKAGE_DIR)
        and obj.ag_code.co_name in LISTING_GENERATORS
    ]


async def none_suspended() -> bool:
    return not suspended_listings()


async def test_closing_a_sync_listing_early_closes_the_async_one(
    saver: BaseCheckpointSaver,
) -> None:
    thread = f"early-{uuid.uuid4()}"
    await put_chain(saver, thread, 20)  # type: ignore[arg-type]
    assert suspended_listings() == []

    listing = saver.list(config(thread))
    next(listing)
    assert suspended_listings() != []  # paused between pages
    listing.close()  # type: ignore[attr-defined]
    assert suspended_listings() == []


async def test_breaking_out_of_a_sync_listing_closes_the_async_one(
    saver: BaseCheckpointSaver,
) -> None:
    thread = f"break-{uuid.uuid4()}"
    await put_chain(saver, thread, 20)  # type: ignore[arg-type]
    for seen, _item in enumerate(saver.list(config(thread))):
        if seen == 2:
            assert suspended_listings() != []
            break
    await eventually(none_suspended, what="the dropped listing closed on its loop")
