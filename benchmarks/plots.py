"""PNG plots from one run's JSON (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.aims import Figures

__all__ = ["render_plots"]

OPS = ("aput", "aput_writes", "aget_tuple_latest", "aget_tuple_by_id", "alist_10")
SIZE_OPS = ("aput", "aget_tuple_latest", "aget_tuple_by_id", "alist_10")
STYLE = {
    "memory": ("tab:gray", ":"),
    "sqlite": ("tab:olive", ":"),
    "official_postgres": ("tab:blue", "--"),
    "official_redis": ("tab:red", "--"),
    "postgres": ("tab:blue", "-"),
    "redis": ("tab:red", "-"),
    "dual_write_through": ("tab:purple", "-"),
    "dual_write_behind": ("tab:green", "-"),
    "dual_write_behind_worker": ("tab:green", "--"),
}


def _savers(f: Figures, measure: str) -> list[str]:
    seen = {r["saver"] for r in f.results if r.get("measure") == measure and "saver" in r}
    return [name for name in f.doc.get("savers", {}) if name in seen]


def _line(ax: Any, f: Figures, saver: str, xs: list[float], ys: list[float]) -> None:
    color, dash = STYLE.get(saver, ("black", "-"))
    ax.plot(xs, ys, dash, color=color, marker="o", markersize=3, label=f.label(saver))


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _graph(f: Figures, out: Path) -> Path | None:
    savers = _savers(f, "graph")
    levels = f.concurrencies()
    if not savers or not levels:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(levels)
    for i, level in enumerate(levels):
        values = [f.graph_rate(s, level) or 0 for s in savers]
        xs = [j + (i - (len(levels) - 1) / 2) * width for j in range(len(savers))]
        ax.bar(xs, values, width, label=f"concurrency {level}")
    ax.set_xticks(range(len(savers)), [f.label(s) for s in savers], rotation=25, ha="right")
    ax.set_ylabel("graph steps/s (higher is better)")
    ax.set_title("case_8842 graph throughput")
    ax.legend()
    return _save(fig, out / "graph_steps.png")


def _scaling(f: Figures, out: Path, measure: str, key: str, ops: tuple[str, ...]) -> Path | None:
    savers = _savers(f, measure)
    if not savers:
        return None
    fig, axes = plt.subplots(1, len(ops), figsize=(4 * len(ops), 4), squeeze=False)
    for ax, op in zip(axes[0], ops, strict=True):
        for saver in savers:
            points = sorted(
                (r[key], r["p50_ms"])
                for r in f.results
                if r.get("measure") == measure and r.get("saver") == saver and r.get("op") == op
            )
            if points:
                _line(ax, f, saver, [p[0] for p in points], [p[1] for p in points])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(op)
        ax.set_xlabel("checkpoints in the thread" if key == "history" else "state size (bytes)")
        ax.set_ylabel("p50 (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    name = "history.png" if key == "history" else "state_size.png"
    return _save(fig, out / name)


def _bytes(f: Figures, out: Path) -> Path | None:
    savers = _savers(f, "bytes_per_step")
    if not savers:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, channel in zip(axes, ("add_messages", "delta"), strict=True):
        for saver in savers:
            series = f.bytes_series(saver, channel)
            if series:
                _line(ax, f, saver, *series)
        ax.set_yscale("log")
        ax.set_title(f"messages channel: {'DeltaChannel' if channel == 'delta' else channel}")
        ax.set_xlabel("messages in the conversation")
        ax.set_ylabel("bytes written per step")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    return _save(fig, out / "bytes_per_step.png")


def _outbox(f: Figures, out: Path) -> Path | None:
    record = f.find("outbox_lag", saver="dual_write_behind")
    if not record or not record.get("series"):
        return None
    series = record["series"]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([r[0] for r in series], [r[1] for r in series], color="tab:green")
    ax.set_xlabel("seconds")
    ax.set_ylabel("outbox entries", color="tab:green")
    ax.axvline(record["load_seconds"], color="gray", linestyle=":", label="load stops")
    other = ax.twinx()
    other.plot([r[0] for r in series], [r[2] for r in series], color="tab:orange")
    other.set_ylabel("oldest pending entry (s)", color="tab:orange")
    ax.set_title(
        f"write_behind under load: {record['writers']} writers, {record['puts_per_s']:,.0f} puts/s"
    )
    ax.legend(loc="upper left")
    return _save(fig, out / "outbox_lag.png")


def render_plots(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write every plot the data allows; returns them by name."""
    out.mkdir(parents=True, exist_ok=True)
    f = Figures(doc)
    made = {
        "graph": _graph(f, out),
        "history": _scaling(f, out, "history", "history", OPS),
        "state_size": _scaling(f, out, "state_size", "size_bytes", SIZE_OPS),
        "bytes_per_step": _bytes(f, out),
        "outbox": _outbox(f, out),
    }
    return {name: path for name, path in made.items() if path is not None}
