"""Read a thread through a DualSaver in a separate process; print what it sees as JSON.

usage: dual_read.py REDIS_URL POSTGRES_URL PREFIX THREAD_ID
"""

import json
import sys

from langgraph_dualsaver.chain.saver import DualSaver

redis_url, postgres_url, prefix, thread = sys.argv[1:5]
with DualSaver.from_conn_string(redis_url, postgres_url, prefix=prefix) as saver:
    cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    latest = saver.get_tuple(cfg)
    listed = [t.config["configurable"]["checkpoint_id"] for t in saver.list(cfg)]
print(
    json.dumps(
        {"latest": latest and latest.config["configurable"]["checkpoint_id"], "listed": listed}
    )
)
