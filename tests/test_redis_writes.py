"""Pending writes in the hot tier: one ZSET member per write (``hot.keys`` module docstring).

The write rules hold per (task_id, idx), storing a write costs the same whatever its
checkpoint already holds, a checkpoint with thousands of writes still loads in one round
trip, and writes stored by the old layout (a HASH of logs) are read and rewritten by
whichever script touches them first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT
from redis.asyncio import ConnectionPool, Redis

from langgraph_dualsaver.hot import keys as K
from langgraph_dualsaver.hot.saver import RedisHotSaver
from langgraph_dualsaver.records import StoredWrite, resolve_writes
from tests.helpers import config
from tests.test_redis_roundtrips import CountingConnection, Trips

LOG_N = {"EXISTS", "TYPE", "ZLEXCOUNT", "ZADD", "ZREMRANGEBYLEX", "PERSIST", "PEXPIRE"}
"""Commands that cost O(1) or O(log n) on a ZSET (ZREMRANGEBYLEX: plus what it removes)."""


async def put(
    saver: RedisHotSaver, thread_id: str, value: Any, *, parent: Any = None, **checkpoint: Any
) -> Any:
    """A checkpoint with channel ``a`` = ``value`` (``checkpoint``: its other fields, such
    as ``id``), a child of the ``parent`` config if given."""
    cp = {**empty_checkpoint(), **checkpoint}
    cp["channel_values"], cp["channel_versions"] = {"a": value}, {"a": str(value)}
    cfg = config(thread_id)
    if parent is not None:
        cfg["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    return await saver.aput(cfg, cp, {}, {"a": str(value)})


async def pending_at(saver: RedisHotSaver, saved: Any) -> Any:
    found = await saver.aget_tuple(saved)
    assert found is not None
    return found.pending_writes


def field_of(saved: Any) -> bytes:
    return K.cp_field("", saved["configurable"]["checkpoint_id"])


@pytest.fixture
async def saver(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisHotSaver]:
    async with RedisHotSaver.from_conn_string(redis_url, prefix=redis_prefix) as opened:
        await opened.asetup()
        yield opened


# -- the write rules --------------------------------------------------------------------


async def test_a_special_write_overwrites_and_an_ordinary_write_keeps_the_first(
    saver: RedisHotSaver, raw: Any
) -> None:
    saved = await put(saver, "rules", 0)
    await saver.aput_writes(saved, [("a", "first"), ("b", "first")], "t1")
    await saver.aput_writes(saved, [("a", "second")], "t1")  # (t1, 0) again: ignored
    await saver.aput_writes(saved, [(ERROR, "e1")], "t1")
    await saver.aput_writes(saved, [(ERROR, "e2")], "t1")  # (t1, -1) again: replaces
    await saver.aput_writes(saved, [(INTERRUPT, "i1")], "t2")
    await saver.aput_writes(saved, [(INTERRUPT, "i2"), ("a", "t2")], "t2")

    found = await saver.aget_tuple(config("rules"))

    assert found is not None and found.pending_writes == [
        ("t1", ERROR, "e2"),
        ("t1", "a", "first"),
        ("t1", "b", "first"),
        ("t2", INTERRUPT, "i2"),
        ("t2", "a", "t2"),
    ]
    assert raw.zcard(saver.thread_keys("rules").writes) == 5  # one member per (task_id, idx)


async def test_each_write_is_one_member_as_the_layout_documents(
    saver: RedisHotSaver, raw: Any
) -> None:
    saved = await put(saver, "layout", 0)
    long_task = "t" * 300  # a str16 header in the key
    await saver.aput_writes(saved, [("a", b"\x00\xff" * 40_000), (ERROR, "x" * 70)], long_task)
    await saver.aput_writes(saved, [(f"c{i}", i) for i in range(200)], "many")

    found = await saver.aget_tuple(config("layout"))
    assert found is not None and len(found.pending_writes) == 202

    field = field_of(saved)
    members = raw.zrange(saver.thread_keys("layout").writes, 0, -1)
    decoded = K.decode_write_members(field, members)
    assert members == sorted(K.write_member(field, w) for w in decoded)
    assert [K.split_write_member(m) for m in members] == [(field, w) for w in decoded]


async def test_a_checkpoint_reads_only_its_own_writes_when_another_id_extends_its_id(
    saver: RedisHotSaver, raw: Any
) -> None:
    short = await put(saver, "prefix", 1, id="cp")
    longer = await put(saver, "prefix", 2, parent=short, id="cp2")
    await saver.aput_writes(short, [("a", "short")], "task")
    await saver.aput_writes(longer, [("a", "longer")], "task")

    assert await pending_at(saver, short) == [("task", "a", "short")]
    await saver.aprune(["prefix"], strategy="keep_latest")  # removes "cp" and its writes
    assert await pending_at(saver, longer) == [("task", "a", "longer")]
    assert raw.zcard(saver.thread_keys("prefix").writes) == 1


# -- cost ---------------------------------------------------------------------------------


async def commands_on_writes(saver: RedisHotSaver, raw: Any, existing: int) -> list[str]:
    """The commands one ``aput_writes`` runs on the writes ZSET, its checkpoint already
    holding ``existing`` writes (read from MONITOR, which shows the scripts' commands)."""
    saved = await put(saver, f"cost-{existing}", 0)
    for start in range(0, existing, 500):
        batch = [("a", "v" * 100)] * min(500, existing - start)
        await saver.aput_writes(saved, batch, f"fill-{start}")
    key = saver.thread_keys(f"cost-{existing}").writes
    seen = []
    with raw.monitor() as monitor:
        await saver.aput_writes(saved, [("a", "v" * 100)], "measured")
        raw.echo("measured")  # on another connection, after the write: the end marker
        while (command := monitor.next_command()["command"]) != "ECHO measured":
            name, _, args = command.partition(" ")
            if args.split(" ", 1)[0] == key:
                seen.append(name.upper())
    return seen


async def test_a_put_writes_runs_the_same_log_n_commands_however_many_writes_are_there(
    saver: RedisHotSaver, raw: Any
) -> None:
    few = await commands_on_writes(saver, raw, 10)
    many = await commands_on_writes(saver, raw, 4_000)
    assert few == many
    assert "ZADD" in many and set(many) <= LOG_N, many


async def test_the_latest_checkpoint_with_thousands_of_writes_loads_in_one_round_trip(
    redis_url: str, redis_prefix: str
) -> None:
    client = Redis(
        connection_pool=ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    )
    saver = RedisHotSaver(client, prefix=redis_prefix)
    try:
        await saver.asetup()
        saved = await put(saver, "trips", {"big": list(range(100))})
        for task in range(20):
            await saver.aput_writes(saved, [(f"c{i}", i) for i in range(100)], f"task-{task:02}")
        with Trips() as load:
            found = await saver.aget_tuple(config("trips"))
        assert load.count == 1
        assert found is not None and found.checkpoint["channel_values"]["a"] == {
            "big": list(range(100))
        }
        assert found.pending_writes[:2] == [("task-00", "c0", 0), ("task-00", "c1", 1)]
        assert len(found.pending_writes) == 2_000
    finally:
        await saver.aclose()
        await client.aclose()


# -- writes stored by the old layout --------------------------------------------------------


def old_log(saver: RedisHotSaver) -> list[StoredWrite]:
    """Writes in arrival order, with a repeated ordinary write and a repeated special one."""

    def write(task: str, idx: int, channel: str, value: Any) -> StoredWrite:
        return StoredWrite(task, "", idx, channel, *saver.serde.dumps_typed(value))

    return [
        write("t1", 0, "a", 1),
        write("t1", 0, "a", 2),  # ignored: the first ordinary write wins
        write("t1", -1, ERROR, "e1"),
        write("t1", -1, ERROR, "e2"),  # replaces e1
        write("t0", 0, "a", 0),
    ]


EXPECTED = [("t0", "a", 0), ("t1", ERROR, "e2"), ("t1", "a", 1)]


async def old_layout_thread(saver: RedisHotSaver, raw: Any, thread_id: str) -> tuple[Any, Any]:
    """A parent and a child checkpoint whose writes are the old layout's HASH: cp field ->
    the encoded writes, concatenated (as the STORE script used to append them)."""
    parent = await put(saver, thread_id, 10)
    child = await put(saver, thread_id, 11, parent=parent)
    await saver.aput_writes(child, [("a", "replaced below")], "t9")  # meta's w flag
    keys = saver.thread_keys(thread_id)
    log = b"".join(K.encode_write(w) for w in old_log(saver))
    raw.delete(keys.writes)
    raw.hset(keys.writes, mapping={field_of(parent): log, field_of(child): log})
    return parent, child


async def load(saver: RedisHotSaver, parent: Any, child: Any) -> Any:
    return await pending_at(saver, child)


async def store(saver: RedisHotSaver, parent: Any, child: Any) -> Any:
    await saver.aput_writes(child, [("a", "late")], "t0")  # (t0, 0) exists: ignored
    await saver.aput_writes(child, [(ERROR, "e3")], "t1")  # replaces e2
    return await pending_at(saver, child)


async def dump(saver: RedisHotSaver, parent: Any, child: Any) -> Any:
    await saver.acopy_thread("old", "copy")
    return await pending_at(
        saver, config("copy", checkpoint_id=child["configurable"]["checkpoint_id"])
    )


async def chain(saver: RedisHotSaver, parent: Any, child: Any) -> Any:
    history = await saver.aget_delta_channel_history(config=child, channels=["a"])
    return history["a"]["writes"], history["a"]["seed"]


async def remove(saver: RedisHotSaver, parent: Any, child: Any) -> Any:
    await saver.aprune(["old"], strategy="keep_latest")
    assert await saver.aget_tuple(parent) is None
    return await pending_at(saver, child)


FIRST_USES: dict[str, tuple[Callable[..., Awaitable[Any]], Any, int]] = {
    "LOAD": (load, EXPECTED, 6),
    "STORE": (store, [("t0", "a", 0), ("t1", ERROR, "e3"), ("t1", "a", 1)], 6),
    "DUMP": (dump, EXPECTED, 6),
    "CHAIN": (chain, ([("t0", "a", 0), ("t1", "a", 1)], 10), 6),
    "REMOVE": (remove, EXPECTED, 3),
}
"""Script -> (the call that runs it first, what it returns, members left in the ZSET)."""


@pytest.mark.parametrize("script", list(FIRST_USES))
async def test_writes_of_the_old_layout_are_read_and_rewritten_by_the_first_script_to_use_them(
    saver: RedisHotSaver, raw: Any, script: str
) -> None:
    parent, child = await old_layout_thread(saver, raw, "old")
    call, expected, members = FIRST_USES[script]

    assert await call(saver, parent, child) == expected

    writes = saver.thread_keys("old").writes
    assert raw.type(writes) == b"zset" and raw.zcard(writes) == members
    assert (await pending_at(saver, child))[0] == ("t0", "a", 0)


async def test_rewriting_the_old_layout_keeps_the_expiry_all_the_thread_keys_share(
    saver: RedisHotSaver, raw: Any
) -> None:
    _, child = await old_layout_thread(saver, raw, "old")
    keys = saver.thread_keys("old")
    for key in keys.data:
        raw.pexpire(key, 600_000)

    assert await pending_at(saver, child) == EXPECTED

    assert raw.type(keys.writes) == b"zset"
    assert all(0 < raw.pttl(key) <= 600_000 for key in keys.data)
    resolved = resolve_writes(old_log(saver))
    assert raw.zrange(keys.writes, *K.writes_range(field_of(child)), bylex=True) == sorted(
        K.write_member(field_of(child), w) for w in resolved
    )
