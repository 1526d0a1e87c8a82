"""Benchmarks: every saver side by side, in one process and one run.

Run ``python benchmarks/run.py --grid quick|full`` (or ``make bench`` / ``make bench-quick``).
The harness writes raw results as JSON; ``report.py`` renders the table and plots from it.
"""
