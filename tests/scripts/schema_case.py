"""One deployment of the case_8842 app in its own process, at a state schema version.

usage: schema_case.py REDIS_URL POSTGRES_URL PREFIX MODE THREAD_ID v1|v2

``v1`` runs the $650 duplicate case as the first release (no ``currency`` in billing,
schema version 1) until it pauses at the human review; ``v2`` resumes it with the
current code and its ``STATE_SCHEMA``. Prints one JSON line with what it saw.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from langgraph.types import Command

from langgraph_dualsaver import DualSaver
from langgraph_dualsaver.app import (
    LARGE_DUPLICATE_CUSTOMER,
    STATE_SCHEMA,
    build_graph,
    new_case,
    thread_config,
)
from tests.schema_helpers import DECISION, V1, v1_services

redis_url, postgres_url, prefix, mode, thread_id, version = sys.argv[1:7]
config = thread_config(thread_id)
schema = V1 if version == "v1" else STATE_SCHEMA
with DualSaver.from_conn_string(
    redis_url, postgres_url, prefix=prefix, mode=mode, state_schema=schema
) as saver:
    saver.setup()
    if version == "v1":
        graph = build_graph(saver, services=v1_services())
        graph.invoke(new_case(LARGE_DUPLICATE_CUSTOMER), config)
    else:
        graph = build_graph(saver)
        graph.invoke(Command(resume=DECISION), config)
    state = graph.get_state(config)
    print(
        json.dumps(
            {
                "next": list(state.next),
                "schema_version": state.metadata.get("schema_version"),
                "billing": state.values.get("billing"),
                "final_response": state.values.get("final_response"),
            }
        )
    )
