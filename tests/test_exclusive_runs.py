"""Exclusive runs (issue 14): one run per thread at a time, on the real servers.

Two processes race for threads, many times, in both chain modes, with Redis down and on
PostgreSQL alone: exactly one run's checkpoints form each thread's history (one root, no
fork) and the other run got ``ThreadBusyError`` and wrote nothing, in Redis and in
PostgreSQL. ``on_busy="wait"`` waits for the holder (bounded); a SIGKILLed holder blocks
its thread only until its lease runs out; sequential runs, resume after ``interrupt()``,
time travel, ``update_state`` and subgraphs keep working with it on.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import operator
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
import redis
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

import langgraph_dualsaver
from langgraph_dualsaver import (
    ConfigurationError,
    DualSaver,
    PostgresDurableSaver,
    RedisHotSaver,
    ThreadBusyError,
    Timeouts,
)
from tests.factories import SAVER_KINDS, open_saver
from tests.helpers import eventually, fetch

SCRIPT = Path(__file__).parent / "scripts" / "exclusive_race.py"
CHAIN_KINDS = ["dual_write_behind", "dual_write_through"]
RACE_KINDS = [*CHAIN_KINDS, "dual_down", "postgres"]


def _load_race_module() -> Any:
    spec = importlib.util.spec_from_file_location("exclusive_race", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


race = _load_race_module()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cfg(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


@asynccontextmanager
async def exclusive_saver(
    kind: str, redis_url: str, pg_dsn: str, prefix: str, **options: Any
) -> AsyncIterator[Any]:
    """A set-up saver of ``kind`` with exclusive runs on (``dual_down``: a DualSaver
    whose Redis is a closed port)."""
    options.setdefault("exclusive_runs", True)
    if kind != "dual_down":
        async with open_saver(
            kind, redis_url=redis_url, pg_dsn=pg_dsn, prefix=prefix, **options
        ) as saver:
            yield saver
        return
    fast = Timeouts(connect=timedelta(milliseconds=200))
    down = f"redis://127.0.0.1:{closed_port()}/0"
    async with DualSaver.from_conn_string(
        down, pg_dsn, prefix=prefix, timeouts=fast, **options
    ) as saver:
        await saver.durable.asetup()
        yield saver


async def lease_of(saver: Any, thread_id: str) -> tuple[str, int] | None:
    if isinstance(saver, DualSaver):
        return await saver._lease(thread_id)
    return await saver.alease(thread_id)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; each is killed (by its PID) if still running after it."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def spawn(processes: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    processes.append(process)
    return process


async def read_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
    if not line:
        assert process.stderr is not None
        raise AssertionError(f"process {process.pid} ended: {process.stderr.read()[-3000:]}")
    return line.strip()


# -- what a thread holds --------------------------------------------------------------


def redis_bytes(url: str, saver: Any, thread_id: str) -> bytes:
    """Everything the hot tier holds for the thread, as one byte string."""
    hot = saver.hot if isinstance(saver, DualSaver) else saver
    client = redis.Redis.from_url(url)
    try:
        found = b""
        for key in hot.thread_keys(thread_id).data:
            kind = client.type(key)
            if kind == b"hash":
                found += b"".join(k + v for k, v in client.hgetall(key).items())
            elif kind == b"zset":
                found += b"".join(client.zrange(key, 0, -1))
        return found
    finally:
        client.close()


async def postgres_bytes(dsn: str, thread_id: str) -> bytes:
    """Everything PostgreSQL holds for the thread, as one byte string."""
    rows = await fetch(
        dsn,
        "SELECT checkpoint AS b, metadata::text AS m FROM dualsaver_checkpoints "
        "WHERE thread_id = $1 UNION ALL SELECT blob, channel FROM dualsaver_blobs "
        "WHERE thread_id = $1 UNION ALL SELECT blob, channel FROM dualsaver_writes "
        "WHERE thread_id = $1",
        thread_id,
    )
    return b"".join((r["b"] or b"") + r["m"].encode() for r in rows)


async def assert_one_history(
    saver: Any, thread_id: str, winner: str, loser: str, runs: int = 1
) -> None:
    """The thread's root checkpoints are one chain (one root, no checkpoint with two
    children), its state ends with the winner's whole run (``runs`` of them, one after
    the other, when both ran: ``winner`` is then a prefix of both names) and holds
    nothing of the loser's."""
    items = [t async for t in saver.alist(cfg(thread_id))]
    roots = [t for t in items if t.config["configurable"]["checkpoint_ns"] == ""]
    parents = [t.parent_config and t.parent_config["configurable"]["checkpoint_id"] for t in roots]
    assert parents.count(None) == 1, f"{thread_id}: {parents.count(None)} roots"
    assert len(set(parents)) == len(parents), f"{thread_id}: a fork in {parents}"
    log = roots[0].checkpoint["channel_values"]["log"]
    tail = log[-4 * runs :]
    names = [tail[at].split(":")[0] for at in range(0, 4 * runs, 4)]
    assert len(set(names)) == runs and all(name.startswith(winner) for name in names), log
    assert tail == [f"{name}:{step}" for name in names for step in ("input", "a", "b", "c")], log
    seen = repr([(t.checkpoint["channel_values"], t.pending_writes) for t in items])
    assert f"{loser}:" not in seen


# -- settings and the error -----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"exclusive_runs": "yes"},
        {"on_busy": "queue"},
        {"lease": timedelta(milliseconds=10)},
        {"lease": 60},
        {"busy_timeout": timedelta(seconds=-1)},
    ],
)
def test_bad_settings_are_refused_by_every_saver(bad: dict[str, Any]) -> None:
    builders = [
        lambda: RedisHotSaver(url="redis://127.0.0.1:1", **bad),
        lambda: PostgresDurableSaver(dsn="postgresql://x@127.0.0.1:1/x", **bad),
        lambda: DualSaver.from_conn_string(
            "redis://127.0.0.1:1", "postgresql://x@127.0.0.1:1/x", **bad
        ),
    ]
    for build in builders:
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            build()


def test_thread_busy_error_names_thread_and_holder() -> None:
    assert langgraph_dualsaver.ThreadBusyError is ThreadBusyError
    busy = ThreadBusyError("t-1", "host/42/abc")
    assert (busy.thread_id, busy.holder, busy.reason) == ("t-1", "host/42/abc", "busy")
    assert "'t-1'" in str(busy) and "'host/42/abc'" in str(busy)
    moved = ThreadBusyError("t-1", "host/7/def", "moved")
    assert "moved on" in str(moved) and "'host/7/def'" in str(moved)


def test_off_by_default() -> None:
    saver = DualSaver.from_conn_string("redis://127.0.0.1:1", "postgresql://x@127.0.0.1:1/x")
    assert not saver.exclusive.enabled
    assert saver.exclusive.on_busy == "raise"


# -- two processes racing -------------------------------------------------------------


@pytest.mark.parametrize("kind", RACE_KINDS)
async def test_two_processes_racing_one_run_wins_the_other_writes_nothing(
    kind: str,
    redis_url: str,
    pg_dsn: str,
    redis_prefix: str,
    processes: list[subprocess.Popen[str]],
) -> None:
    rounds, period = 20, 0.15
    base = f"race-{uuid.uuid4().hex[:8]}"
    async with exclusive_saver(kind, redis_url, pg_dsn, redis_prefix) as saver:
        seed = race.graph(saver, "seed")
        for i in range(1, rounds, 2):  # odd rounds race on a thread with a history
            await seed.ainvoke({"log": ["seed:input"]}, cfg(f"{base}-{i}"))
        hot_url = redis_url if kind != "dual_down" else f"redis://127.0.0.1:{closed_port()}/0"
        racers = {
            name: spawn(processes, kind, hot_url, pg_dsn, redis_prefix, name,
                        str(period), str(rounds), base)
            for name in ("racerA", "racerB")
        }  # fmt: skip
        for process in racers.values():
            assert await read_line(process) == "ready"
        start = time.time() + 0.3
        for process in racers.values():
            assert process.stdin is not None
            process.stdin.write(f"{start}\n")
            process.stdin.flush()
        results = {}
        for name, process in racers.items():
            results[name] = [json.loads(await read_line(process)) for _ in range(rounds)]
            assert await asyncio.to_thread(process.wait, 60) == 0

        if isinstance(saver, DualSaver) and kind != "dual_down":
            await saver.aflush()
        outcomes = {"busy": 0, "moved": 0, "sequential": 0}
        for i in range(rounds):
            a, b = results["racerA"][i], results["racerB"][i]
            if a["ok"] and b["ok"]:  # a process fell behind (a loaded machine): no race
                outcomes["sequential"] += 1
                await assert_one_history(saver, f"{base}-{i}", "racer", "nobody", runs=2)
                continue
            assert sorted([a["ok"], b["ok"]]) == [False, True], (i, a, b)
            winner, loser = ("racerA", "racerB") if a["ok"] else ("racerB", "racerA")
            refused = results[loser][i]
            assert refused["reason"] in ("busy", "moved"), refused
            outcomes[refused["reason"]] += 1
            thread_id = f"{base}-{i}"
            await assert_one_history(saver, thread_id, winner, loser)
            assert loser.encode() not in await postgres_bytes(pg_dsn, thread_id)
            if kind in CHAIN_KINDS:
                await assert_one_history(saver.hot, thread_id, winner, loser)
                await assert_one_history(saver.durable, thread_id, winner, loser)
                assert winner.encode() in redis_bytes(redis_url, saver, thread_id)
                assert loser.encode() not in redis_bytes(redis_url, saver, thread_id)
        # The runs really overlapped, most of the time.
        assert outcomes["busy"] > 0 and outcomes["sequential"] <= rounds // 4, outcomes


# -- on_busy="wait" -------------------------------------------------------------------


def waits(seconds: float) -> dict[str, Any]:
    return {"on_busy": "wait", "busy_timeout": timedelta(seconds=seconds)}


async def hold(saver: Any, thread_id: str, gate: asyncio.Event) -> Any:
    """A run whose node b waits for ``gate``: it holds the thread meanwhile."""
    return await race.graph(saver, "holder", gate).ainvoke(
        {"log": ["holder:input"]}, cfg(thread_id)
    )


@pytest.mark.parametrize("kind", CHAIN_KINDS)
async def test_wait_waits_for_the_holder_then_runs_on_its_result(
    kind: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread_id = f"wait-{uuid.uuid4().hex[:8]}"
    stores = {"redis_url": redis_url, "pg_dsn": pg_dsn, "prefix": redis_prefix}
    async with (
        exclusive_saver(kind, **stores) as holding,
        exclusive_saver(kind, **stores, **waits(20)) as waiting,
    ):
        gate = asyncio.Event()
        holder = asyncio.create_task(hold(holding, thread_id, gate))

        async def held() -> bool:
            return await lease_of(holding, thread_id) is not None

        await eventually(held, what="the holder's lease")
        waiter = asyncio.create_task(
            race.graph(waiting, "waiter").ainvoke({"log": ["waiter:input"]}, cfg(thread_id))
        )
        done, _ = await asyncio.wait({waiter}, timeout=0.5)
        assert not done  # it waits while the holder runs
        gate.set()
        await holder
        state = await waiter
        assert state["log"] == [
            *(f"holder:{s}" for s in ("input", "a", "b", "c")),
            *(f"waiter:{s}" for s in ("input", "a", "b", "c")),
        ]
        await assert_one_history(waiting, thread_id, "waiter", "nobody")


@pytest.mark.parametrize("kind", CHAIN_KINDS)
async def test_wait_gives_up_after_busy_timeout(
    kind: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread_id = f"timeout-{uuid.uuid4().hex[:8]}"
    stores = {"redis_url": redis_url, "pg_dsn": pg_dsn, "prefix": redis_prefix}
    timeout = timedelta(milliseconds=300)
    async with (
        exclusive_saver(kind, **stores) as holding,
        exclusive_saver(kind, **stores, on_busy="wait", busy_timeout=timeout) as waiting,
    ):
        gate = asyncio.Event()
        holder = asyncio.create_task(hold(holding, thread_id, gate))

        async def held() -> bool:
            return await lease_of(holding, thread_id) is not None

        await eventually(held, what="the holder's lease")
        lease = await lease_of(holding, thread_id)
        assert lease is not None
        started = time.monotonic()
        with pytest.raises(ThreadBusyError) as refused:
            await race.graph(waiting, "waiter").ainvoke({"log": ["waiter:input"]}, cfg(thread_id))
        assert time.monotonic() - started >= timeout.total_seconds()
        assert (refused.value.reason, refused.value.holder) == ("busy", lease[0])
        assert refused.value.thread_id == thread_id
        gate.set()
        await holder
        await assert_one_history(holding, thread_id, "holder", "waiter")


# -- a crashed holder -----------------------------------------------------------------


@pytest.mark.parametrize("kind", CHAIN_KINDS)
async def test_a_sigkilled_holder_blocks_the_thread_only_until_its_lease_ends(
    kind: str,
    redis_url: str,
    pg_dsn: str,
    redis_prefix: str,
    processes: list[subprocess.Popen[str]],
) -> None:
    thread_id = f"killed-{uuid.uuid4().hex[:8]}"
    lease_s = 2.0
    stores = {"redis_url": redis_url, "pg_dsn": pg_dsn, "prefix": redis_prefix}
    async with (
        exclusive_saver(kind, **stores) as saver,
        exclusive_saver(kind, **stores, **waits(10)) as waiting,
    ):
        holder = spawn(
            processes, kind, redis_url, pg_dsn, redis_prefix, "holder", thread_id, str(lease_s)
        )
        assert await read_line(holder) == "holding"

        async def held() -> bool:
            return await lease_of(saver, thread_id) is not None

        await eventually(held, what="the holder's lease")
        lease = await lease_of(saver, thread_id)
        assert lease is not None and f"/{holder.pid}/" in lease[0]
        holder.kill()
        killed_at = time.monotonic()
        await asyncio.to_thread(holder.wait, 10)

        with pytest.raises(ThreadBusyError) as refused:  # the lease outlives its holder...
            await race.graph(saver, "next").ainvoke({"log": ["next:input"]}, cfg(thread_id))
        assert (refused.value.reason, refused.value.holder) == ("busy", lease[0])
        state = await race.graph(waiting, "next").ainvoke({"log": ["next:input"]}, cfg(thread_id))
        assert time.monotonic() - killed_at < lease_s + 1.5  # ...but not past its end
        assert state["log"][-4:] == [f"next:{s}" for s in ("input", "a", "b", "c")]


# -- everything else keeps working ----------------------------------------------------


class Review(TypedDict):
    steps: Annotated[list[str], operator.add]
    value: int


def review_graph(saver: Any) -> Any:
    def prepare(state: Review) -> dict[str, Any]:
        return {"steps": ["prepare"], "value": state["value"] + 1}

    def review(state: Review) -> dict[str, Any]:
        return {"steps": [f"review:{interrupt('approve?')}"]}

    def finish(state: Review) -> dict[str, Any]:
        return {"steps": ["finish"], "value": state["value"] * 2}

    builder = StateGraph(Review)
    builder.add_node("prepare", prepare)
    builder.add_node("review", review)
    builder.add_node("finish", finish)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "review")
    builder.add_edge("review", "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=saver)


@pytest.fixture(params=SAVER_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def saver(kind: str, redis_url: str, pg_dsn: str, redis_prefix: str) -> AsyncIterator[Any]:
    async with exclusive_saver(kind, redis_url, pg_dsn, redis_prefix) as opened:
        yield opened


async def test_sequential_runs_resume_and_time_travel_keep_working(saver: Any) -> None:
    graph = review_graph(saver)
    thread = cfg(f"travel-{uuid.uuid4().hex[:8]}")
    for turn in (1, 2):  # sequential runs, each paused by interrupt() and resumed
        paused = await graph.ainvoke({"value": turn, "steps": []}, thread)
        assert "__interrupt__" in paused
        done = await graph.ainvoke(Command(resume=f"ok{turn}"), thread)
        assert done["steps"][-3:] == ["prepare", f"review:ok{turn}", "finish"]

    history = [s async for s in graph.aget_state_history(thread)]
    before_review = next(s for s in history if s.next == ("review",))
    # Time travel: replay from a past checkpoint (a "fork"), answer it differently.
    replayed = await graph.ainvoke(None, before_review.config)
    assert "__interrupt__" in replayed
    forked = await graph.ainvoke(Command(resume="changed"), thread)
    assert forked["steps"][-2:] == ["review:changed", "finish"]
    # New input from a past checkpoint (not the head).
    start = next(s for s in history if s.next == ("prepare",))
    again = await graph.ainvoke({"value": 100, "steps": []}, start.config)
    assert "__interrupt__" in again
    resumed = await graph.ainvoke(Command(resume="late"), thread)
    assert resumed["steps"][-1] == "finish"
    # And a plain run after all that.
    assert "__interrupt__" in await graph.ainvoke({"value": 5, "steps": []}, thread)


async def test_update_state_works_between_runs_and_is_refused_during_one(
    saver: Any, kind: str
) -> None:
    thread = cfg(f"update-{uuid.uuid4().hex[:8]}")
    plain = race.graph(saver, "run")
    await plain.ainvoke({"log": ["run:input"]}, thread)
    await plain.aupdate_state(thread, {"log": ["manual"]})
    assert (await plain.aget_state(thread)).values["log"][-1] == "manual"
    await plain.ainvoke({"log": ["run:input"]}, thread)  # a run after the update

    gate = asyncio.Event()
    holder = asyncio.create_task(hold(saver, thread["configurable"]["thread_id"], gate))

    async def held() -> bool:
        return await lease_of(saver, thread["configurable"]["thread_id"]) is not None

    await eventually(held, what="the holder's lease")
    with pytest.raises(ThreadBusyError):
        await plain.aupdate_state(thread, {"log": ["during"]})
    gate.set()
    state = await holder
    assert "during" not in state["log"] and state["log"][-1] == "holder:c"


async def test_subgraphs_run_with_it_on(saver: Any) -> None:
    inner = StateGraph(Review)
    inner.add_node("one", lambda s: {"steps": ["one"]})
    inner.add_node("two", lambda s: {"steps": ["two"]})
    inner.add_edge(START, "one")
    inner.add_edge("one", "two")
    inner.add_edge("two", END)
    outer = StateGraph(Review)
    outer.add_node("sub", inner.compile())
    outer.add_node("after", lambda s: {"steps": ["after"]})
    outer.add_edge(START, "sub")
    outer.add_edge("sub", "after")
    outer.add_edge("after", END)
    graph = outer.compile(checkpointer=saver)
    thread = cfg(f"sub-{uuid.uuid4().hex[:8]}")
    for _ in range(2):
        state = await graph.ainvoke({"value": 0, "steps": []}, thread)
        assert state["steps"][-3:] == ["one", "two", "after"]
    items = [t async for t in saver.alist(thread)]
    assert any(t.config["configurable"]["checkpoint_ns"] for t in items)  # nested ones too


@pytest.mark.parametrize("kind", CHAIN_KINDS)
async def test_durability_exit_first_finisher_wins(
    kind: str, redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    thread_id = f"exit-{uuid.uuid4().hex[:8]}"
    async with exclusive_saver(kind, redis_url, pg_dsn, redis_prefix) as saver:
        graph = race.graph(saver, "x")
        first, second = race.graph(saver, "first"), race.graph(saver, "second")
        await graph.ainvoke({"log": ["x:input"]}, cfg(thread_id))
        results = await asyncio.gather(
            first.ainvoke({"log": ["first:input"]}, cfg(thread_id), durability="exit"),
            second.ainvoke({"log": ["second:input"]}, cfg(thread_id), durability="exit"),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, ThreadBusyError)]
        assert len(refused) == 1 and refused[0].reason == "moved", results
        winner = "first" if results[1] is refused[0] else "second"
        await assert_one_history(
            saver, thread_id, winner, "second" if winner == "first" else "first"
        )


async def test_it_costs_no_round_trip_more_than_off(
    redis_url: str, redis_prefix: str, raw: redis.Redis
) -> None:
    """The claim rides in the put's own STORE script: a run sends the same scripts, and
    nothing else, with it on as off (the script does a few lookups more inside)."""

    async def scripts_of_a_run(exclusive_runs: bool) -> tuple[int, int]:
        async with RedisHotSaver.from_conn_string(
            redis_url, prefix=redis_prefix, exclusive_runs=exclusive_runs
        ) as saver:
            await saver.asetup()
            graph = race.graph(saver, "run")
            thread = cfg(f"count-{uuid.uuid4().hex[:8]}")
            await graph.ainvoke({"log": ["run:input"]}, thread)  # connections, a first run
            calls = {"eval": 0, "other": 0}
            eval_, pipeline = saver.conn.eval, saver.conn.pipeline

            def counted(name: str, call: Any) -> Any:
                def wrapper(*args: Any, **kwargs: Any) -> Any:
                    calls[name] += 1
                    return call(*args, **kwargs)

                return wrapper

            saver.conn.eval = counted("eval", eval_)  # type: ignore[method-assign]
            saver.conn.pipeline = counted("other", pipeline)  # type: ignore[method-assign]
            before = int(raw.info("commandstats")["cmdstat_evalsha"]["calls"])
            await graph.ainvoke({"log": ["run:input"]}, thread)
            sent = int(raw.info("commandstats")["cmdstat_evalsha"]["calls"]) - before
            assert calls["other"] == 0 and calls["eval"] == sent
            return sent, calls["eval"]

    assert await scripts_of_a_run(True) == await scripts_of_a_run(False)
