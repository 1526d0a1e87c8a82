"""Run PostgresDurableSaver.setup() in its own process, in step with others.

usage: postgres_setup.py POSTGRES_URL BARRIER_DIR NAME PEERS

Writes BARRIER_DIR/NAME, waits (up to 30 s) until PEERS files are there, then sets up,
so that the processes' setup() calls overlap. Prints "ok".
"""

import sys
import time
from pathlib import Path

from langgraph_dualsaver.durable.saver import PostgresDurableSaver

dsn, barrier, name, peers = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])

with PostgresDurableSaver.from_conn_string(dsn) as saver:
    (barrier / name).write_text("ready")
    deadline = time.monotonic() + 30
    while len(list(barrier.iterdir())) < peers:
        if time.monotonic() > deadline:
            sys.exit("the other processes never arrived")
        time.sleep(0.005)
    saver.setup()
print("ok")
