"""The notebooks' pictures, drawn offline from data alone: no server, no web service."""

from __future__ import annotations

import pytest

from langgraph_dualsaver.app import build_graph
from langgraph_dualsaver.app.measure import BurstTrace, LagSample, ReadLatencies
from langgraph_dualsaver.app.pictures import (
    graph_picture,
    history_picture,
    lag_picture,
    latency_picture,
    layers,
    png,
)
from langgraph_dualsaver.cli.views import HistoryRow, history_tree

pytestmark = pytest.mark.pure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def texts(figure) -> set[str]:
    return {t.get_text() for ax in figure.axes for t in ax.texts}


def test_layers_point_every_edge_right_and_break_cycles_at_their_back_edge():
    nodes = ["s", "a", "b", "c", "e"]
    edges = [("s", "a"), ("a", "b"), ("a", "c"), ("b", "c"), ("c", "a"), ("c", "e")]
    layer = layers(nodes, edges)
    assert layer == {"s": 0, "a": 1, "b": 2, "c": 3, "e": 4}  # c -> a is the back edge
    assert all(layer[t] > layer[s] for s, t in edges if (s, t) != ("c", "a"))


def test_the_case_8842_graph_is_drawn_with_every_node_and_edge():
    drawing = build_graph().get_graph()
    figure = graph_picture(drawing, "case_8842")
    names = {"START", "END"} | {n for n in drawing.nodes if not n.startswith("__")}
    assert names <= texts(figure)
    arrows = [p for p in figure.axes[0].patches if type(p).__name__ == "FancyArrowPatch"]
    assert len(arrows) == len(drawing.edges)
    dashed = [a for a in arrows if a.get_linestyle() != "-"]
    assert len(dashed) == sum(e.conditional for e in drawing.edges) == 3
    assert png(figure).startswith(PNG_MAGIC)


def test_the_history_picture_labels_the_update_state_branch_and_the_fork():
    links = [("c0", None, "input", ()), ("c1", "c0", "loop", ("intake",)),
             ("c2", "c1", "loop", ("account_agent", "billing_agent")),
             ("c3", "c2", "loop", ("policy_agent",)),
             ("c4", "c2", "update", ("billing_agent",))]  # fmt: skip
    parents = [link[1] for link in links]
    rows = [HistoryRow(cid, "", n, source, nodes, parent, parents.count(cid), None)
            for n, (cid, parent, source, nodes) in enumerate(links)]  # fmt: skip
    figure = history_picture(history_tree(rows), "a thread")
    assert {"input", "intake", "account_agent\nbilling_agent", "update_state\nas billing_agent",
            "step 2\n…c2"} <= texts(figure)  # fmt: skip
    assert png(figure).startswith(PNG_MAGIC)


def test_the_burst_picture_draws_the_lag_and_says_when_it_caught_up():
    samples = tuple(LagSample(ms, lag, done) for ms, lag, done in
                    [(0, 0, 0), (5, 30, 0), (10, 12, 40), (15, 20, 60), (20, 0, 80)])  # fmt: skip
    trace = BurstTrace(runs=2, samples=samples, last_write_ms=14.0, caught_up_ms=20.0)
    assert (trace.entries, trace.peak_lag) == (80, 30)
    figure = lag_picture(trace)
    assert "the outbox empty 6 ms after the last write" in figure.get_suptitle()
    assert png(figure).startswith(PNG_MAGIC)


def test_the_latency_picture_writes_the_median_of_each_kind_of_read():
    reads = ReadLatencies(cold_ms=[2.0, 3.0, 4.0], hot_ms=[0.25, 0.5, 0.75], misses=3,
                          backfills=3, hits=3)  # fmt: skip
    figure = latency_picture(reads)
    assert {"median 3.00 ms\np90 4.00 ms", "median 0.50 ms\np90 0.75 ms"} <= texts(figure)
    assert png(figure).startswith(PNG_MAGIC)
