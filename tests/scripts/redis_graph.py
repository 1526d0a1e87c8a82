"""Run a small graph on a RedisHotSaver in a process of its own; print its state as JSON.

usage: redis_graph.py REDIS_URL PREFIX THREAD_ID MODE WORKDIR

MODE:
  ask      prepare -> review (interrupt) -> finish, from the start: stops at the question
  answer   resume that thread with Command(resume="approved")
  slow     a -> b -> c, where b waits for WORKDIR/release (the test kills us there)
  finish   resume the slow graph from its last checkpoint (invoke(None))

Every node appends its name and this process's pid to WORKDIR/runs, so the test sees
which nodes ran in which process.
"""

import json
import operator
import os
import sys
import time
from pathlib import Path
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from langgraph_dualsaver.hot.saver import RedisHotSaver

redis_url, prefix, thread_id, mode, workdir = sys.argv[1:6]
work = Path(workdir)


class State(TypedDict):
    steps: Annotated[list[str], operator.add]


def node(name, body=None):
    def run(state):
        if body is not None:
            body(state)
        with open(work / "runs", "a") as runs:
            runs.write(f"{name} {os.getpid()}\n")
        return {"steps": [name]}

    return run


def review(state):
    answer = interrupt({"question": "approve?"})
    return {"steps": [f"review:{answer}"]}


def wait_for_release(state):
    while not (work / "release").exists():
        time.sleep(0.05)


def build(slow: bool, saver):
    builder = StateGraph(State)
    if slow:
        names = ["a", "b", "c"]
        builder.add_node("a", node("a"))
        builder.add_node("b", node("b", wait_for_release))
        builder.add_node("c", node("c"))
    else:
        names = ["prepare", "review", "finish"]
        builder.add_node("prepare", node("prepare"))
        builder.add_node("review", review)
        builder.add_node("finish", node("finish"))
    builder.add_edge(START, names[0])
    builder.add_edge(names[0], names[1])
    builder.add_edge(names[1], names[2])
    builder.add_edge(names[2], END)
    return builder.compile(checkpointer=saver)


config = {"configurable": {"thread_id": thread_id}}
with RedisHotSaver.from_conn_string(redis_url, prefix=prefix) as saver:
    saver.setup()
    graph = build(mode in ("slow", "finish"), saver)
    if mode in ("ask", "slow"):
        result = graph.invoke({"steps": []}, config)
    elif mode == "answer":
        result = graph.invoke(Command(resume="approved"), config)
    else:
        result = graph.invoke(None, config)
    state = graph.get_state(config)
print(
    json.dumps(
        {
            "steps": result["steps"],
            "next": list(state.next),
            "interrupts": [i.value for i in state.interrupts],
        }
    )
)
