"""One of two processes racing for threads with exclusive_runs on; prints a JSON line
per round.

usage: exclusive_race.py KIND REDIS_URL PG_DSN PREFIX NAME PERIOD ROUNDS BASE
       exclusive_race.py KIND REDIS_URL PG_DSN PREFIX holder THREAD LEASE_S

KIND is a saver kind of tests.factories, or ``dual_down`` (a DualSaver whose Redis URL
is a closed port: every write goes to PostgreSQL). Once set up it prints ``ready`` and
reads the start time (wall clock) from stdin. Round i starts at START + i * PERIOD
(both processes start it together) and invokes a -> b -> c on thread ``BASE-i``; every
value it writes names NAME, so the test sees whose writes were kept.
``holder``: one run whose node b blocks forever (the test SIGKILLs us there); it
prints ``holding`` once b runs.
"""

import asyncio
import json
import operator
import sys
import time
from datetime import timedelta
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from langgraph_dualsaver import PostgresDurableSaver, ThreadBusyError, Timeouts
from langgraph_dualsaver.chain.saver import DualSaver
from langgraph_dualsaver.hot.saver import RedisHotSaver


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def open_saver(kind: str, redis_url: str, pg_dsn: str, prefix: str, **options: Any) -> Any:
    if kind == "postgres":
        return PostgresDurableSaver.from_conn_string(pg_dsn, exclusive_runs=True, **options)
    if kind == "redis":
        return RedisHotSaver.from_conn_string(
            redis_url, prefix=prefix, exclusive_runs=True, **options
        )
    mode = "write_through" if kind == "dual_write_through" else "write_behind"
    fast = Timeouts(connect=timedelta(milliseconds=200), command=timedelta(seconds=2))
    return DualSaver.from_conn_string(
        redis_url, pg_dsn, mode=mode, prefix=prefix, exclusive_runs=True, timeouts=fast,
        **options,
    )  # fmt: skip


def graph(saver: Any, name: str, block: asyncio.Event | None = None) -> Any:
    def node(step: str) -> Any:
        async def run(state: State) -> dict[str, Any]:
            if block is not None and step == "b":
                print("holding", flush=True)
                await block.wait()
            await asyncio.sleep(0.05)
            return {"log": [f"{name}:{step}"]}

        return run

    builder = StateGraph(State)
    for step in "abc":
        builder.add_node(step, node(step))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder.compile(checkpointer=saver)


async def race(saver: Any, name: str, start: float, period: float, rounds: int, base: str) -> None:
    compiled = graph(saver, name)
    for i in range(rounds):
        await asyncio.sleep(max(0.0, start + i * period - time.time()))
        config = {"configurable": {"thread_id": f"{base}-{i}"}}
        try:
            await compiled.ainvoke({"log": [f"{name}:input"]}, config)
            print(json.dumps({"round": i, "ok": True}), flush=True)
        except ThreadBusyError as exc:
            reply = {"round": i, "ok": False, "reason": exc.reason, "holder": exc.holder}
            print(json.dumps(reply), flush=True)


async def hold(saver: Any, thread_id: str) -> None:
    config = {"configurable": {"thread_id": thread_id}}
    await graph(saver, "holder", asyncio.Event()).ainvoke({"log": ["holder:input"]}, config)


async def main(argv: list[str]) -> None:
    kind, redis_url, pg_dsn, prefix, name = argv[:5]
    options: dict[str, Any] = {}
    if name == "holder":
        options["lease"] = timedelta(seconds=float(argv[6]))
    async with open_saver(kind, redis_url, pg_dsn, prefix, **options) as saver:
        await (saver.durable.asetup() if kind == "dual_down" else saver.asetup())
        if name == "holder":
            await hold(saver, argv[5])
        else:
            print("ready", flush=True)
            start = float(sys.stdin.readline())
            period, rounds, base = float(argv[5]), int(argv[6]), argv[7]
            await race(saver, name, start, period, rounds, base)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
