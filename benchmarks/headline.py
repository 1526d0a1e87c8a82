"""The README's benchmark headline: a few ratios from one run, between two markers.

``make bench`` (the full grid's default report) rewrites the block, so the README's
figures always come from the latest full run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.aims import Figures, compute_aims

__all__ = ["README_END", "README_START", "headline", "update_readme"]


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


README_START = "<!-- benchmarks:headline:start -->"
README_END = "<!-- benchmarks:headline:end -->"
HEADLINE = (
    ("dual_write_behind", "official_postgres", 1),
    ("dual_write_behind", "official_postgres", 16),
    ("dual_write_behind", "postgres", 1),
    ("dual_write_behind", "postgres", 16),
    ("dual_write_behind", "memory", 16),
    ("dual_write_behind_worker", "official_postgres", 16),
    ("dual_write_through", "official_postgres", 16),
    ("postgres", "official_postgres", 16),
    ("redis", "official_redis", 16),
)


def headline(doc: dict[str, Any]) -> list[str]:
    """The README's few lines: graph steps/s ratios and the aims met, from one run."""
    f = Figures(doc)
    lines = []
    for ours, theirs, level in HEADLINE:
        a, b = f.graph_rate(ours, level), f.graph_rate(theirs, level)
        ratio = a / b if a and b else None
        lines.append(
            f"- {f.label(ours)} vs {f.label(theirs)}, case_8842 graph steps/s at "
            f"concurrency {level}: **{_x(ratio)}**"
        )
    aims = compute_aims(doc)
    met = sum(1 for a in aims if a.met is True)
    missed = sum(1 for a in aims if a.met is False)
    lines.append(
        f"- Aims: {met} met, {missed} not met, {len(aims) - met - missed} not decided "
        f"(grid `{doc.get('grid')}`, {doc.get('machine', {}).get('cores')} cores, "
        f"{(doc.get('started_at') or '')[:10]})."
    )
    return lines


def update_readme(readme: Path, doc: dict[str, Any]) -> bool:
    """Replace the headline block of the README, if it has one; True if it did."""
    if not readme.exists():
        return False
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    block = "\n".join([README_START, *headline(doc), README_END])
    readme.write_text(text[:start] + block + text[end + len(README_END) :])
    return True
