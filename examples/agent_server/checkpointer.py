"""The checkpointer ``langgraph.json`` points at: a ``DualSaver`` configured from the
``DUALSAVER_*`` environment variables (see the README, "Use with Agent Server")."""

from langgraph_dualsaver.server import checkpointer

__all__ = ["checkpointer"]
