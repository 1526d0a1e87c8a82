"""``python -m langgraph_dualsaver``: the ``dualsaver`` command."""

from langgraph_dualsaver.cli import main

raise SystemExit(main())
