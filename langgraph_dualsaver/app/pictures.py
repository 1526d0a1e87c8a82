"""Pictures for the notebooks, drawn offline with matplotlib (no pyplot, no web service).

* ``graph_picture(graph)``: a compiled graph from ``graph.get_graph()``'s nodes and
  edges, laid out in layers (conditional edges dashed).
* ``history_picture(lines)``: a thread's checkpoints as a tree, from the same
  ``history_tree`` rows ``dualsaver history --tree`` prints.
* ``lag_picture(trace)``: the outbox over a burst of writes (``measure.burst_lag``).
* ``latency_picture(reads)``: hot and cold read latency (``measure.read_latencies``).

Each returns a ``matplotlib.figure.Figure``; ``png(figure)`` gives the bytes a notebook
shows with ``IPython.display.Image``. Needs matplotlib (the ``dev`` and ``bench`` extras).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

if TYPE_CHECKING:
    from langchain_core.runnables.graph import Edge, Graph
    from matplotlib.axes import Axes

    from langgraph_dualsaver.app.measure import BurstTrace, ReadLatencies
    from langgraph_dualsaver.cli.views import TreeLine

__all__ = [
    "graph_picture",
    "history_picture",
    "lag_picture",
    "latency_picture",
    "layers",
    "png",
]

START, END = "__start__", "__end__"
LAYER_DX, ROW_DY = 2.4, 1.3
"""Data units between layers, and between nodes of one layer."""
DASHED = (0, (4, 3))
BLUE, DARK, ORANGE, PURPLE, GREEN, GREY = (
    "#dbe9f6", "#34495e", "#e67e22", "#8e44ad", "#27ae60", "#7f8c8d",
)  # fmt: skip


def png(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, without a creation time or version (stable diffs)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)  # text can be measured before saving
    return figure


# -- the graph --------------------------------------------------------------------------


def _back_edges(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Edges that close a cycle (to a node still on the depth-first path)."""
    out: dict[str, list[str]] = {node: [] for node in nodes}
    for source, target in edges:
        out[source].append(target)
    state: dict[str, int] = {}  # 1: on the path, 2: done
    back = set()
    for root in nodes:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(out[root]))]
        while stack:
            node, targets = stack[-1]
            child = next(targets, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                back.add((node, child))
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(out[child])))
    return back


def layers(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Each node's layer: the longest path to it from a node with no incoming edge
    (cycles broken at their back edges), so every forward edge points right."""
    back = _back_edges(nodes, edges)
    forward = [(s, t) for s, t in edges if (s, t) not in back and s != t]
    layer = {node: 0 for node in nodes}
    for _ in range(len(nodes)):  # longest path by relaxation; a DAG settles in n passes
        changed = False
        for source, target in forward:
            if layer[target] < layer[source] + 1:
                layer[target] = layer[source] + 1
                changed = True
        if not changed:
            break
    return layer


def _positions(layer: Mapping[str, int], nodes: Sequence[str]) -> dict[str, tuple[float, float]]:
    """x from the layer, y spread around 0 within a layer (in the graph's node order)."""
    by_layer: dict[int, list[str]] = {}
    for node in nodes:
        by_layer.setdefault(layer[node], []).append(node)
    positions = {}
    for x, members in by_layer.items():
        for index, node in enumerate(members):
            positions[node] = (x * LAYER_DX, ((len(members) - 1) / 2 - index) * ROW_DY)
    return positions


def _node_box(ax: Axes, node: str, xy: tuple[float, float]) -> FancyBboxPatch:
    """The node's label in a rounded box sized to it; START and END dark."""
    ends = node in (START, END)
    label = {START: "START", END: "END"}.get(node, node)
    text = ax.text(*xy, label, ha="center", va="center", fontsize=11, zorder=3,
                   color="white" if ends else DARK,
                   weight="bold" if ends else "normal")  # fmt: skip
    extent = text.get_window_extent().transformed(ax.transData.inverted())
    width, height = extent.width + 0.35, extent.height + 0.3
    box = FancyBboxPatch(
        (xy[0] - width / 2, xy[1] - height / 2), width, height,
        boxstyle="round,pad=0.02,rounding_size=0.15", zorder=2,
        facecolor=DARK if ends else BLUE, edgecolor=DARK, linewidth=1.2,
    )  # fmt: skip
    ax.add_patch(box)
    return box


def _route_under(
    source: tuple[float, float],
    target: tuple[float, float],
    positions: Mapping[str, tuple[float, float]],
) -> float | None:
    """Where an edge that skips layers runs: below every node it passes. ``None`` for
    an edge between neighbouring layers (drawn straight)."""
    lo, hi = sorted((source[0], target[0]))
    if hi - lo <= LAYER_DX * 1.01:
        return None
    between = [y for x, y in positions.values() if lo < x < hi]
    return min([*between, source[1], target[1]]) - 0.9


def _edge_arrow(
    edge: Edge,
    boxes: Mapping[str, FancyBboxPatch],
    positions: Mapping[str, tuple[float, float]],
) -> FancyArrowPatch:
    """Box to box; an edge that skips layers goes down, under, and up into its target."""
    a, b = positions[edge.source], positions[edge.target]
    style: dict[str, Any] = {
        "arrowstyle": "-|>", "mutation_scale": 16, "linewidth": 1.4, "color": DARK,
        "zorder": 1, "linestyle": DASHED if edge.conditional else "-",
    }  # fmt: skip
    under = _route_under(a, b, positions)
    if under is None:
        return FancyArrowPatch(a, b, patchA=boxes[edge.source], patchB=boxes[edge.target],
                               **style)  # fmt: skip
    start, end = (a[0], boxes[edge.source].get_y()), (b[0], boxes[edge.target].get_y())
    return FancyArrowPatch(path=Path([start, (a[0], under), (b[0], under), end]), **style)


def graph_picture(graph: Graph, title: str = "") -> Figure:
    """A LangGraph drawing (``compiled.get_graph()``) as a layered picture, left to
    right: solid edges always run, dashed ones are picked by a routing function."""
    nodes = list(graph.nodes)
    positions = _positions(layers(nodes, [(e.source, e.target) for e in graph.edges]), nodes)
    xs, ys = [p[0] for p in positions.values()], [p[1] for p in positions.values()]
    figure = _figure(1.9 * (max(xs) - min(xs)) / LAYER_DX + 2.2, 1.4 * (max(ys) - min(ys)) + 2.4)
    ax = figure.add_axes((0.01, 0.1, 0.98, 0.78 if title else 0.88))
    ax.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
    ax.set_ylim(min(ys) - 1.3, max(ys) + 0.5)
    ax.axis("off")
    boxes = {node: _node_box(ax, node, positions[node]) for node in nodes}
    for edge in graph.edges:
        ax.add_patch(_edge_arrow(edge, boxes, positions))
    figure.legend(
        handles=[
            Line2D([], [], color=DARK, label="always runs next"),
            Line2D([], [], color=DARK, linestyle=DASHED, label="picked by a routing function"),
        ],
        loc="lower left", frameon=False, fontsize=10, ncols=2,
    )  # fmt: skip
    if title:
        figure.suptitle(title, x=0.01, ha="left", fontsize=12)
    return figure


# -- a thread's history -----------------------------------------------------------------


def _node_label(line: TreeLine) -> str:
    row = line.row
    nodes = "\n".join(row.nodes) or "-"
    if row.source == "input":
        return "input"
    if row.source == "update":
        named = f"\nas {', '.join(row.nodes)}" if row.nodes else ""
        sets = f"\nsets {', '.join(row.changed)}" if row.changed else ""
        return f"update_state{named}{sets}"
    return nodes


@dataclass(frozen=True)
class _Look:
    marker: str
    color: str
    size: float


def _look(line: TreeLine) -> _Look:
    if line.row.is_fork:
        return _Look("D", ORANGE, 190)
    if line.row.source == "update":
        return _Look("s", PURPLE, 150)
    return _Look("o", DARK, 110)


def _tree_edges(ax: Axes, lines: Sequence[TreeLine], at: Mapping[str, tuple[float, float]]) -> None:
    """Parent to child: straight along a lane, down and across where a branch starts;
    grey on the first chain, purple on the branches."""
    for line in lines:
        parent = at.get(line.row.parent_id or "")
        if parent is None:
            continue
        x, y = at[line.row.checkpoint_id]
        if parent[1] == y:
            xs, ys = [parent[0], x], [y, y]
        else:
            corner = (parent[0] + x) / 2
            xs, ys = [parent[0], corner, corner, x], [parent[1], parent[1], y, y]
        ax.plot(xs, ys, color=PURPLE if line.lane else GREY, linewidth=2, zorder=1)


def _branch_captions(
    ax: Axes, lines: Sequence[TreeLine], at: Mapping[str, tuple[float, float]]
) -> None:
    """Left of where each branch starts: what started it (an ``update_state``, a replay)."""
    for line in lines:
        parent = at.get(line.row.parent_id or "")
        x, y = at[line.row.checkpoint_id]
        if parent is None or parent[1] == y:
            continue
        what = {"update": "update_state branch", "fork": "replayed branch"}.get(
            line.row.source or "", "branch"
        )
        ax.text((parent[0] + x) / 2 - 0.06, y, what, ha="right", va="center", fontsize=10,
                color=PURPLE, style="italic")  # fmt: skip


def history_picture(lines: Sequence[TreeLine], title: str = "") -> Figure:
    """Checkpoints left to right by depth, one row per branch: a fork point is an
    orange diamond, an ``update_state`` checkpoint a purple square, the latest ringed."""
    at = {line.row.checkpoint_id: (float(line.depth), -1.7 * line.lane) for line in lines}
    depth = max((line.depth for line in lines), default=0)
    lanes = max((line.lane for line in lines), default=0) + 1
    figure = _figure(1.55 * depth + 2.6, 1.75 * lanes + 1.3)
    ax = figure.add_axes((0.01, 0.12, 0.98, 0.72 if title else 0.86))
    ax.set_xlim(-0.7, depth + 0.7)
    ax.set_ylim(-1.7 * (lanes - 1) - 0.9, 0.75)
    ax.axis("off")
    _tree_edges(ax, lines, at)
    _branch_captions(ax, lines, at)
    for line in lines:
        x, y = at[line.row.checkpoint_id]
        look = _look(line)
        ax.scatter([x], [y], s=look.size, marker=look.marker, color=look.color, zorder=3)
        if line.latest:
            ax.scatter([x], [y], s=520, facecolors="none", edgecolors=GREEN, linewidths=2,
                       zorder=2)  # fmt: skip
        ax.text(x, y + 0.22, _node_label(line), ha="center", va="bottom", fontsize=9,
                color=look.color if look.color != DARK else "black", zorder=4)  # fmt: skip
        step = "-" if line.row.step is None else line.row.step
        ax.text(x, y - 0.25, f"step {step}\n…{line.row.checkpoint_id[-6:]}", ha="center",
                va="top", fontsize=8, color=GREY, zorder=4)  # fmt: skip
    _history_legend(figure)
    if title:
        figure.suptitle(title, x=0.01, ha="left", fontsize=12)
    return figure


def _history_legend(figure: Figure) -> None:
    def dot(marker: str, color: str, label: str, **style: Any) -> Line2D:
        return Line2D([], [], marker=marker, color=color, linestyle="", label=label,
                      **{"markersize": 9, **style})  # fmt: skip

    figure.legend(
        handles=[
            dot("o", DARK, "checkpoint (a step ran)"),
            dot("D", ORANGE, "fork point (more than one child)"),
            dot("s", PURPLE, "written by update_state"),
            dot("o", GREEN, "latest: what get_state reads", markerfacecolor="none",
                markeredgewidth=2, markersize=13),
        ],
        loc="lower left", ncols=4, frameon=False, fontsize=9,
    )  # fmt: skip


# -- the outbox over a burst ------------------------------------------------------------


def _burst_span(ax: Axes, trace: BurstTrace) -> None:
    ax.axvspan(0, trace.last_write_ms, color=ORANGE, alpha=0.12, linewidth=0)
    ax.axvline(trace.last_write_ms, color=ORANGE, linewidth=1.2, linestyle="--")
    ax.axvline(trace.caught_up_ms, color=GREEN, linewidth=1.2, linestyle=":")
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def lag_picture(trace: BurstTrace) -> Figure:
    """Top: entries waiting in the outbox; bottom: entries made durable so far. The
    burst is shaded; dashed, its last write; dotted, the moment the outbox is empty."""
    figure = _figure(10, 5.6)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"hspace": 0.12})
    ms = [s.at_ms for s in trace.samples]
    top.fill_between(ms, [s.lag for s in trace.samples], step="post", color=ORANGE, alpha=0.55)
    top.step(ms, [s.lag for s in trace.samples], where="post", color=ORANGE, linewidth=1.2)
    top.set_ylabel("outbox lag\n(entries not yet durable)")
    bottom.step(ms, [s.durable for s in trace.samples], where="post", color=DARK, linewidth=1.6)
    bottom.axhline(trace.entries, color=GREY, linewidth=1, linestyle="-.")
    bottom.set_ylabel("durable in PostgreSQL\n(entries, cumulative)")
    bottom.set_xlabel("ms since the burst started")
    for ax in (top, bottom):
        _burst_span(ax, trace)
    top.set_ylim(0, trace.peak_lag * 1.15 + 1)
    top.set_xlim(0, trace.caught_up_ms * 1.1)
    bottom.set_ylim(0, trace.entries * 1.15 + 1)
    bottom.text(0, trace.entries, f" all {trace.entries} entries", color=GREY, va="bottom",
                fontsize=9)  # fmt: skip
    top.text(trace.last_write_ms, trace.peak_lag * 1.12, "last write ", color=ORANGE,
             ha="right", va="top", fontsize=9)  # fmt: skip
    top.text(trace.caught_up_ms, trace.peak_lag * 1.12, " caught up", color=GREEN,
             va="top", fontsize=9)  # fmt: skip
    figure.suptitle(
        f"{trace.runs} case_8842 runs at once (write_behind): {trace.entries} outbox entries, "
        f"peak lag {trace.peak_lag},\nthe outbox empty "
        f"{trace.caught_up_ms - trace.last_write_ms:.0f} ms after the last write",
        x=0.01, ha="left", fontsize=11,
    )  # fmt: skip
    figure.subplots_adjust(left=0.11, right=0.98, top=0.88, bottom=0.1)
    return figure


# -- hot and cold reads -----------------------------------------------------------------


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _log_ms_axis(ax: Axes, values: Sequence[float]) -> None:
    """A log x axis in plain milliseconds (0.2, 0.5, 1, 2, ...), with room at the right
    for the medians."""
    ax.set_xscale("log")
    ax.set_xlim(min(values) / 1.5, max(values) * 8)
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="x", which="major", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def latency_picture(reads: ReadLatencies) -> Figure:
    """One dot per read (ms, log scale), a box for each kind, the median and p90 written."""
    figure = _figure(10, 3.6)
    ax = figure.add_axes((0.2, 0.18, 0.77, 0.64))
    groups = [("hot: Valkey answers", reads.hot_ms, ORANGE),
              ("cold: Valkey misses,\nPostgreSQL answers,\nthread put back", reads.cold_ms,
               PURPLE)]  # fmt: skip
    ax.boxplot([g[1] for g in groups], orientation="horizontal", widths=0.5,
               showfliers=False, medianprops={"color": "black", "linewidth": 1.6})  # fmt: skip
    everything = [*reads.hot_ms, *reads.cold_ms]
    for index, (_, values, color) in enumerate(groups, start=1):
        offsets = [index + ((i % 9) - 4) * 0.04 for i in range(len(values))]
        ax.scatter(values, offsets, s=14, color=color, alpha=0.7, zorder=3)
        ax.text(max(everything) * 1.6, index, f"median {_quantile(values, 0.5):.2f} ms\n"
                f"p90 {_quantile(values, 0.9):.2f} ms", va="center", fontsize=9)  # fmt: skip
    ax.set_yticks([1, 2], [g[0] for g in groups])
    _log_ms_axis(ax, everything)
    ax.set_xlabel("ms per saver.aget_tuple(config) for the latest checkpoint (log scale)")
    ratio = _quantile(reads.cold_ms, 0.5) / _quantile(reads.hot_ms, 0.5)
    figure.suptitle(
        f"The latest checkpoint of {len(reads.cold_ms)} threads, read cold (after TTL "
        f"expiry), then hot: the median cold read takes {ratio:.1f}x the hot one",
        x=0.01, ha="left", fontsize=11,
    )  # fmt: skip
    return figure
