"""The case_8842 support workflow for the Agent Server (graph id ``case_8842``).

Compiled without a checkpointer: the server gives it the one ``langgraph.json`` names
(``checkpointer.py``, a ``DualSaver``). A refund over $500 or a locked account stops
at ``policy_agent`` for a human; resume the thread with ``Command(resume={"approved":
True, "reviewer": ..., "note": ...})``.
"""

from langgraph_dualsaver.app.graph import build_graph

graph = build_graph()
