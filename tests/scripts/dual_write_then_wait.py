"""Write three checkpoints in write_behind mode with no flusher, print their ids (they
are acknowledged), then wait to be killed.

usage: dual_write_then_wait.py REDIS_URL POSTGRES_URL THREAD_ID
"""

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, for tests.*

from langgraph_dualsaver.chain.saver import DualSaver
from tests.helpers import ids_of, put_chain

redis_url, postgres_url, thread = sys.argv[1:4]


async def main() -> None:
    async with DualSaver.from_conn_string(
        redis_url, postgres_url, mode="write_behind", background_flush=False
    ) as saver:
        await saver.asetup()
        saved = await put_chain(saver, thread, 3)
        print(json.dumps(ids_of(saved)), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
