"""The sync bridge and per-loop connections, on one DualSaver."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from langgraph_dualsaver import DualSaver, EventLoopError
from langgraph_dualsaver._loops import _BRIDGE, run_sync
from tests.helpers import config, put_chain


def test_sync_close_inside_a_running_loop_that_used_the_saver_returns(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    """Jupyter's case: an ``await`` in one cell, ``saver.close()`` in the next."""
    script = textwrap.dedent(
        f"""
        import asyncio
        from langgraph_dualsaver import DualSaver

        async def main():
            saver = DualSaver.from_conn_string({redis_url!r}, {pg_dsn!r},
                                               prefix={redis_prefix!r})
            await saver.asetup()
            await saver.aget_tuple({{"configurable": {{"thread_id": "x"}}}})
            saver.close()
            print("closed")

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "closed"


def test_one_saver_serves_sync_calls_and_several_event_loops(
    redis_url: str, pg_dsn: str, redis_prefix: str
) -> None:
    with DualSaver.from_conn_string(redis_url, pg_dsn, prefix=redis_prefix) as saver:
        saver.setup()
        first = asyncio.run(put_chain(saver, "loops", 1))
        second = asyncio.run(put_chain(saver, "loops", 1, start=first[-1]))  # a new loop
        assert saver.get_tuple(config("loops")).config == second[-1]  # sync, bridge loop


def test_a_sync_call_on_the_bridge_loop_raises_instead_of_deadlocking() -> None:
    async def inside_the_bridge() -> None:
        async def noop() -> None:
            return None

        run_sync(noop())

    future = asyncio.run_coroutine_threadsafe(inside_the_bridge(), _BRIDGE.loop)
    with pytest.raises(EventLoopError, match="await the async method"):
        future.result(timeout=10)
