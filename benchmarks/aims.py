"""The project's performance aims, computed from one run's JSON, met or not.

Every aim is a ratio of two figures from the same run (the machine is shared, so
absolute numbers from different runs do not compare). A ratio is "how many times
better": for rates ours / theirs, for latencies theirs / ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean, median
from typing import Any

__all__ = ["Aim", "Figures", "compute_aims"]

OURS = ("postgres", "redis", "dual_write_through", "dual_write_behind")


@dataclass(frozen=True)
class Aim:
    group: str
    name: str
    ratio: float | None
    target: float | None
    """Met when ``ratio >= target`` (or ``<=`` when ``at_most``); None: no number set."""
    detail: str
    at_most: bool = False
    partial: str | None = None
    """Why the grid cannot decide this aim (e.g. it stops short of 10,000 checkpoints)."""

    @property
    def met(self) -> bool | None:
        if self.ratio is None or self.target is None or self.partial:
            return None
        return self.ratio <= self.target if self.at_most else self.ratio >= self.target

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "(no number set)"
        return f"{'<=' if self.at_most else '>='} {self.target:g}x"


class Figures:
    """Look-ups into the flat result records of one run."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.results: list[dict[str, Any]] = doc.get("results", [])

    def label(self, saver: str) -> str:
        return self.doc.get("savers", {}).get(saver, {}).get("label", saver)

    def find(self, measure: str, **match: Any) -> dict[str, Any] | None:
        for record in self.results:
            if record.get("measure") == measure and all(
                record.get(k) == v for k, v in match.items()
            ):
                return record
        return None

    def graph_rate(self, saver: str, concurrency: int) -> float | None:
        record = self.find("graph", saver=saver, concurrency=concurrency)
        return record["steps_per_s"] if record else None

    def concurrencies(self) -> list[int]:
        return sorted({r["concurrency"] for r in self.results if r.get("measure") == "graph"})

    def op_p50(self, saver: str, op: str) -> float | None:
        record = self.find("ops", saver=saver, op=op)
        return record.get("p50_ms") if record else None

    def history_p50(self, saver: str, op: str, history: int) -> float | None:
        record = self.find("history", saver=saver, op=op, history=history)
        return record.get("p50_ms") if record else None

    def histories(self) -> list[int]:
        return sorted({r["history"] for r in self.results if r.get("measure") == "history"})

    def floor_p50(self, floor: str) -> float | None:
        values = [
            r["p50_ms"]
            for r in self.results
            if r.get("measure") == "floor" and r.get("floor") == floor and "p50_ms" in r
        ]
        return min(values) if values else None

    def bytes_series(self, saver: str, channel: str) -> tuple[list[int], list[float]] | None:
        record = self.find("bytes_per_step", saver=saver, channel=channel)
        return (record["messages"], record["bytes_per_step"]) if record else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"


CHAIN_AIMS = (
    # (ours, theirs, target, concurrencies): the chain against the official saver, its
    # own durable tier alone and the in-memory ceiling; write_behind both with its
    # in-process flusher (what users run first) and with a separate flush worker.
    ("dual_write_behind", "official_postgres", 2.0, (1, 16)),
    ("dual_write_behind", "postgres", 1.2, (1, 16)),
    ("dual_write_behind", "memory", 0.5, (16,)),
    ("dual_write_behind_worker", "official_postgres", 2.0, (1, 16)),
    ("dual_write_behind_worker", "postgres", 1.2, (1, 16)),
    ("dual_write_behind_worker", "memory", 0.5, (16,)),
    ("dual_write_through", "official_postgres", 1.3, (1, 16)),
    ("dual_write_through", "postgres", 0.9, (1, 16)),
)


def _graph_aims(f: Figures) -> list[Aim]:
    aims = []
    measured = set(f.concurrencies())
    for ours, theirs, target, concurrencies in CHAIN_AIMS:
        for concurrency in concurrencies:
            a, b = f.graph_rate(ours, concurrency), f.graph_rate(theirs, concurrency)
            aims.append(
                Aim(
                    "graph steps/s",
                    f"{f.label(ours)} vs {f.label(theirs)}, concurrency {concurrency}",
                    _ratio(a, b),
                    target,
                    f"{_fmt(a, 'steps/s')} vs {_fmt(b, 'steps/s')}",
                    partial=None if concurrency in measured else "grid has no such concurrency",
                )
            )
    return aims


def _floor_aims(f: Figures) -> list[Aim]:
    floor = f.floor_p50("redis_pipeline")
    aims = []
    for op in ("aput", "aget_tuple_latest"):
        p50 = f.op_p50("redis", op)
        aims.append(
            Aim(
                "hot path",
                f"{f.label('redis')} {op} p50 / Redis pipeline floor p50",
                _ratio(p50, floor),
                1.3,
                f"{_fmt(p50, 'ms')} vs {_fmt(floor, 'ms')}",
                at_most=True,
            )
        )
    return aims


def _flat_history_aims(f: Figures) -> list[Aim]:
    lengths = f.histories()
    if not lengths:
        return []
    short, long = lengths[0], lengths[-1]
    partial = None if long >= 10_000 and short <= 10 else f"grid measured {short} to {long}"
    aims = []
    for saver in OURS:
        a, b = (
            f.history_p50(saver, "aget_tuple_latest", long),
            f.history_p50(saver, "aget_tuple_latest", short),
        )
        aims.append(
            Aim(
                "flat latest lookup",
                f"{f.label(saver)} latest aget_tuple p50, {long:,} / {short:,} checkpoints",
                _ratio(a, b),
                1.2,
                f"{_fmt(a, 'ms')} vs {_fmt(b, 'ms')}",
                at_most=True,
                partial=partial,
            )
        )
    return aims


def _durable_vs_official(f: Figures) -> list[Aim]:
    ours, theirs = "postgres", "official_postgres"
    aims = []

    def latency(name: str, a: float | None, b: float | None, partial: str | None = None) -> None:
        aims.append(
            Aim(
                "PostgresDurableSaver vs AsyncPostgresSaver",
                name,
                _ratio(b, a),
                1.0,
                f"{_fmt(a, 'ms')} vs {_fmt(b, 'ms')} p50",
                partial=partial,
            )
        )

    latency("aput", f.op_p50(ours, "aput"), f.op_p50(theirs, "aput"))
    latency(
        "aget_tuple latest",
        f.op_p50(ours, "aget_tuple_latest"),
        f.op_p50(theirs, "aget_tuple_latest"),
    )
    lengths = f.histories()
    for length in (10, 10_000):
        partial = None if length in lengths else f"grid has no {length:,}-checkpoint thread"
        latency(
            f"aget_tuple latest, {length:,}-checkpoint thread",
            f.history_p50(ours, "aget_tuple_latest", length),
            f.history_p50(theirs, "aget_tuple_latest", length),
            partial,
        )
    latency("alist(limit=10)", f.op_p50(ours, "alist_10"), f.op_p50(theirs, "alist_10"))
    for concurrency, target in ((1, 1.0), (16, 1.3)):
        a, b = f.graph_rate(ours, concurrency), f.graph_rate(theirs, concurrency)
        aims.append(
            Aim(
                "PostgresDurableSaver vs AsyncPostgresSaver",
                f"graph steps/s, concurrency {concurrency}",
                _ratio(a, b),
                target,
                f"{_fmt(a, 'steps/s')} vs {_fmt(b, 'steps/s')}",
            )
        )
    return aims


def _hot_vs_official(f: Figures) -> list[Aim]:
    aims = []
    for concurrency in f.concurrencies():
        a, b = f.graph_rate("redis", concurrency), f.graph_rate("official_redis", concurrency)
        aims.append(
            Aim(
                "RedisHotSaver vs AsyncRedisSaver",
                f"graph steps/s, concurrency {concurrency}",
                _ratio(a, b),
                2.0 if concurrency == 16 else None,
                f"{_fmt(a, 'steps/s')} vs {_fmt(b, 'steps/s')}",
            )
        )
    return aims


def delta_window(
    messages: list[int], values: list[float]
) -> tuple[float, float, float, str] | None:
    """Bytes/step at the first turn, then the mean and the median over the last 50 turns,
    and which messages those cover.

    A DeltaChannel writes a full snapshot every 100 updates (50 turns here): the mean over
    50 turns is the amortized cost at that length, snapshot included; the median is a
    typical step without one.
    """
    if not values:
        return None
    window = values[-50:]
    covered = messages[-len(window) :]
    return values[0], fmean(window), median(window), f"{covered[0]}-{covered[-1]} messages"


def _delta_aims(f: Figures) -> list[Aim]:
    aims = []
    for saver in OURS:
        series = f.bytes_series(saver, "delta")
        if series is None:
            aims.append(
                Aim("DeltaChannel bytes/step", f"{f.label(saver)}", None, 2.0, "not measured", True)
            )
            continue
        messages, values = series
        first, last, typical, covered = delta_window(messages, values)  # type: ignore[misc]
        partial = None if messages[-1] >= 500 else f"conversation stopped at {messages[-1]}"
        aims.append(
            Aim(
                "DeltaChannel bytes/step",
                f"{f.label(saver)}: at ~{messages[-1]} messages / at the first message",
                _ratio(last, first),
                2.0,
                f"{_fmt(last, 'B')} amortized, {_fmt(typical, 'B')} median ({covered}) "
                f"vs {_fmt(first, 'B')}",
                at_most=True,
                partial=partial,
            )
        )
    return aims


def _drain_aims(f: Figures) -> list[Aim]:
    record = f.find("outbox_drain", saver="dual_write_behind")
    if record is None:
        return [Aim("outbox", "drain rate / one process's put rate", None, 5.0, "not measured")]
    drain, put = record.get("drain_entries_per_s"), record.get("put_entries_per_s")
    return [
        Aim(
            "outbox",
            f"drain rate / one process's put rate ({record['writers']} writers)",
            _ratio(drain, put),
            5.0,
            f"{_fmt(drain, 'entries/s')} vs {_fmt(put, 'entries/s')}",
        )
    ]


def compute_aims(doc: dict[str, Any]) -> list[Aim]:
    """Every aim of the brief, in the order it lists them."""
    f = Figures(doc)
    return [
        *_graph_aims(f),
        *_floor_aims(f),
        *_flat_history_aims(f),
        *_durable_vs_official(f),
        *_hot_vs_official(f),
        *_delta_aims(f),
        *_drain_aims(f),
    ]
