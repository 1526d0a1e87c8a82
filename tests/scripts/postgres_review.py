"""Run or resume a human-in-the-loop graph on PostgreSQL in its own process.

usage: postgres_review.py POSTGRES_URL THREAD_ID RUN_LOG start|resume ANSWER

``start`` runs until the graph asks for approval (interrupt) and exits; ``resume``
answers with ANSWER. Every node run appends its name to RUN_LOG (outside the graph
state), so the caller can see which nodes ran in which process. Prints the graph's
result as JSON. ``start`` uses the sync API, ``resume`` the async one.
"""

import asyncio
import json
import operator
import sys
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from langgraph_dualsaver.durable.saver import PostgresDurableSaver

dsn, thread_id, run_log, mode = sys.argv[1:5]
config = {"configurable": {"thread_id": thread_id}}


class State(TypedDict):
    steps: Annotated[list[str], operator.add]
    amount: int


def ran(node: str) -> None:
    with open(run_log, "a") as log:
        log.write(node + "\n")


def prepare(state: State) -> dict:
    ran("prepare")
    return {"steps": ["prepare"], "amount": state["amount"] * 2}


def approve(state: State) -> dict:
    ran("approve")
    answer = interrupt({"refund": state["amount"]})
    return {"steps": [f"approve:{answer}"]}


def pay(state: State) -> dict:
    ran("pay")
    return {"steps": ["pay"]}


def graph(saver: PostgresDurableSaver):
    builder = StateGraph(State)
    for name, node in (("prepare", prepare), ("approve", approve), ("pay", pay)):
        builder.add_node(name, node)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "approve")
    builder.add_edge("approve", "pay")
    builder.add_edge("pay", END)
    return builder.compile(checkpointer=saver)


def start() -> dict:
    with PostgresDurableSaver.from_conn_string(dsn) as saver:
        saver.setup()
        result = graph(saver).invoke({"steps": [], "amount": 306}, config)
    return {"steps": result["steps"], "interrupt": result["__interrupt__"][0].value}


async def resume(answer: str) -> dict:
    async with PostgresDurableSaver.from_conn_string(dsn) as saver:
        compiled = graph(saver)
        before = await compiled.aget_state(config)
        result = await compiled.ainvoke(Command(resume=answer), config)
    return {"waiting_on": list(before.next), "steps": result["steps"], "amount": result["amount"]}


out = start() if mode == "start" else asyncio.run(resume(sys.argv[5]))
print(json.dumps(out))
