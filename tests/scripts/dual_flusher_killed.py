"""A flusher worker that SIGKILLs itself mid-batch: before its PostgreSQL commit, or
after the commit and before XACK.

usage: dual_flusher_killed.py REDIS_URL POSTGRES_URL before_commit|after_commit [PREFIX]
"""

import asyncio
import os
import signal
import sys

from langgraph_dualsaver.chain.flusher import Flusher
from langgraph_dualsaver.chain.saver import DualSaver

redis_url, postgres_url, kill_point = sys.argv[1:4]
prefix = sys.argv[4] if len(sys.argv) > 4 else "dualsaver"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DyingFlusher(Flusher):
    async def _ack(self, entries):  # the commit is done; the XACK never happens
        die()


async def main() -> None:
    async with DualSaver.from_conn_string(
        redis_url, postgres_url, prefix=prefix, background_flush=False
    ) as saver:
        if kill_point == "before_commit":
            write_batch = saver.durable.awrite_guarded

            async def dying_write(records, seqs, **options):
                die()
                return await write_batch(records, seqs, **options)

            saver.durable.awrite_guarded = dying_write
        await DyingFlusher(saver.hot, saver.durable).run_once()
    sys.exit("the flusher should have been killed")


asyncio.run(main())
