"""The benchmark harness: the quick grid end to end, and the report from JSON.

Nothing here asserts a timing: only that the harness runs every saver, writes well-formed
JSON, a report and plots, reports failures loudly, and stops the servers it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.aims import compute_aims
from benchmarks.grid import GRIDS
from benchmarks.headline import README_END, README_START, update_readme
from benchmarks.plots import OPS
from benchmarks.report import render_markdown
from benchmarks.savers import SAVERS
from benchmarks.workloads import percentiles

ROOT = Path(__file__).resolve().parent.parent
QUICK_TIMEOUT_S = 150
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PER_SAVER = ("graph", "ops", "history", "state_size", "bytes_per_step")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not running; /proc tells the difference.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the quick grid once in a subprocess; stop it (SIGTERM, then SIGKILL) if it
    overruns, so the servers it started are stopped too."""
    out = tmp_path_factory.mktemp("bench")
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "run.py"),
        "--grid",
        "quick",
        "--out",
        str(out),
        "--markdown",
        str(out / "RESULTS.md"),
        "--no-progress",
    ]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = proc.communicate(timeout=QUICK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"the quick grid overran {QUICK_TIMEOUT_S}s:\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]
    doc = json.loads((out / "results.json").read_text())
    return {"doc": doc, "out": out, "output": output}


def test_quick_grid_measures_every_saver_without_errors(quick_run: dict) -> None:
    doc = quick_run["doc"]
    assert doc["grid"] == "quick"
    assert doc["finished_at"]
    assert set(doc["savers"]) == {spec.name for spec in SAVERS}
    modules_error = doc["servers"]["redis"]["modules_error"]
    for name, entry in doc["savers"].items():
        if name == "official_redis" and modules_error:
            assert modules_error in entry["error"]
            continue
        assert entry["available"], f"{name}: {entry['error']}"
    errors = [f"{e['measure']}/{e['saver']}: {e['error']}" for e in doc["errors"]]
    assert errors == [], "\n".join(errors)


def test_quick_grid_records_are_well_formed(quick_run: dict) -> None:
    doc = quick_run["doc"]
    grid = GRIDS["quick"]
    available = [name for name, entry in doc["savers"].items() if entry["available"]]
    by_measure: dict[str, list[dict]] = {}
    for record in doc["results"]:
        by_measure.setdefault(record["measure"], []).append(record)
        if "p50_ms" in record:
            assert 0 < record["p50_ms"] <= record["p99_ms"], record
    for measure in PER_SAVER:
        savers = {r["saver"] for r in by_measure.get(measure, [])}
        assert savers == set(available), measure
    for saver in available:
        graph = [r for r in by_measure["graph"] if r["saver"] == saver]
        assert sorted(r["concurrency"] for r in graph) == sorted(grid.graph_concurrency)
        assert all(r["steps_per_s"] > 0 and r["invokes"] >= r["concurrency"] for r in graph)
        ops = {r["op"]: r["n"] for r in by_measure["ops"] if r["saver"] == saver}
        assert ops == dict.fromkeys(OPS, grid.op_samples)
        history = {(r["history"], r["op"]) for r in by_measure["history"] if r["saver"] == saver}
        assert history == {(n, op) for n in grid.history_lengths for op in OPS}
        for series in (r for r in by_measure["bytes_per_step"] if r["saver"] == saver):
            assert series["messages"][-1] == grid.conversation_messages
            assert len(series["bytes_per_step"]) == len(series["messages"])
            assert all(value > 0 for value in series["bytes_per_step"]), series
    floors = {(r["floor"], r["when"]) for r in by_measure["floor"]}
    assert floors == {
        (f, w) for f in ("redis_pipeline", "asyncpg_insert_commit") for w in ("start", "end")
    }
    drain = by_measure["outbox_drain"][0]
    assert drain["drained"] >= drain["entries"] > 0
    cold = {r["read"]: r for r in by_measure["cold_read"] if r["saver"] == "dual_write_behind"}
    assert cold["cold"]["backfills"] == grid.cold_threads  # every cold read came from PG
    assert cold["hot"]["hot_hits"] >= grid.cold_threads  # and the second read from Redis


def test_quick_grid_writes_report_and_plots(quick_run: dict) -> None:
    out: Path = quick_run["out"]
    report = (out / "RESULTS.md").read_text()
    for heading in ("## Machine", "## Aims", "## case_8842 graph", "## Reading"):
        assert heading in report
    for entry in quick_run["doc"]["savers"].values():
        assert entry["label"] in report
    for name in ("graph_steps", "history", "state_size", "bytes_per_step", "outbox_lag"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC, name
        assert f"]({name}.png)" in report


def test_quick_grid_stops_the_servers_it_started(quick_run: dict) -> None:
    pids = quick_run["doc"]["servers"]["started_pids"]
    if not os.environ.get("DUALSAVER_REDIS_URL") and not os.environ.get("DUALSAVER_POSTGRES_URL"):
        assert len(pids) == 2
    assert [pid for pid in pids if _alive(pid)] == []


@pytest.mark.pure
def test_report_shows_failures_loudly(tmp_path: Path) -> None:
    doc = {
        "grid": "quick",
        "command": "python benchmarks/run.py --grid quick",
        "savers": {
            "memory": {"label": "InMemorySaver", "available": True, "error": None},
            "redis": {
                "label": "RedisHotSaver",
                "available": False,
                "error": "langgraph_dualsaver.hot.saver.RedisHotSaver is not importable",
            },
        },
        "results": [],
        "errors": [
            {
                "measure": "history",
                "saver": "memory",
                "error": "RuntimeError: boom",
                "traceback": "",
            }
        ],
    }
    report = render_markdown(doc, {}, tmp_path / "RESULTS.md")
    assert "1 saver(s) not measured, 1 error(s)" in report
    assert (
        "**redis not measured**: langgraph_dualsaver.hot.saver.RedisHotSaver is not importable"
        in report
    )
    assert "**ERROR** in `history` for `memory`: RuntimeError: boom" in report


@pytest.mark.pure
def test_aims_compare_ratios_against_targets() -> None:
    def graph(saver: str, rate: float, concurrency: int = 1) -> dict:
        return {
            "measure": "graph", "saver": saver, "concurrency": concurrency, "steps_per_s": rate
        }  # fmt: skip

    doc = {
        "savers": {},
        "results": [
            graph("dual_write_behind", 300.0),
            graph("official_postgres", 100.0),
            graph("postgres", 280.0),
            graph("dual_write_through", 125.0),
            graph("dual_write_behind", 400.0, 16),
            graph("memory", 1000.0, 16),
        ],
    }
    aims = {(aim.group, aim.name): aim for aim in compute_aims(doc)}
    behind = aims["graph steps/s", "dual_write_behind vs official_postgres, concurrency 1"]
    assert behind.ratio == pytest.approx(3.0) and behind.met is True
    over_durable = aims["graph steps/s", "dual_write_behind vs postgres, concurrency 1"]
    assert over_durable.ratio == pytest.approx(300 / 280) and over_durable.met is False  # < 1.2x
    assert aims["graph steps/s", "dual_write_behind vs memory, concurrency 16"].met is False
    through = aims["graph steps/s", "dual_write_through vs official_postgres, concurrency 1"]
    assert through.met is False  # 1.25x < 1.3x
    assert ("graph steps/s", "dual_write_behind vs memory, concurrency 1") not in aims
    unmeasured = aims["graph steps/s", "dual_write_through vs postgres, concurrency 16"]
    assert unmeasured.ratio is None and unmeasured.met is None  # not measured: not decided


@pytest.mark.pure
def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    summary = percentiles([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert summary["n"] == 100
    assert summary["p50_ms"] == pytest.approx(50.0)
    assert summary["p99_ms"] == pytest.approx(99.0)
    assert percentiles([]) == {"n": 0}


@pytest.mark.pure
def test_readme_headline_block_is_replaced_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold figures\n{README_END}\nafter\n")
    doc = {
        "grid": "full",
        "savers": {},
        "results": [
            {"measure": "graph", "saver": "redis", "concurrency": 16, "steps_per_s": 300.0},
            {
                "measure": "graph",
                "saver": "official_redis",
                "concurrency": 16,
                "steps_per_s": 100.0,
            },
        ],
    }
    assert update_readme(readme, doc)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n")
    assert "old figures" not in text
    assert "redis vs official_redis, case_8842 graph steps/s at concurrency 16: **3.00x**" in text
    readme.write_text("no markers\n")
    assert not update_readme(readme, doc)
    assert readme.read_text() == "no markers\n"


# -- benchmarks/big_state.py --quick --------------------------------------------------

BIG_STATE_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def big_state_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The big-state benchmark's quick size once, in a subprocess (stopped if it overruns)."""
    out = tmp_path_factory.mktemp("big_state")
    command = [sys.executable, str(ROOT / "benchmarks" / "big_state.py"), "--quick"]
    proc = subprocess.Popen(
        [*command, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=BIG_STATE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"big_state --quick overran {BIG_STATE_TIMEOUT_S}s:\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]
    return {"doc": json.loads((out / "big_state.json").read_text()), "out": out}


def test_big_state_quick_measures_every_saver_and_store(big_state_run: dict) -> None:
    import langgraph_dualsaver
    from benchmarks.big_state import SIZES, VARIANTS

    doc, size = big_state_run["doc"], SIZES["quick"]
    savers = doc["savers"]
    assert list(savers) == ["official_postgres", *(v.name for v in VARIANTS)]
    offload = savers["dual_zstd_offload"]
    assert offload["available"] == hasattr(langgraph_dualsaver, "Offload"), offload["error"]
    for name, entry in savers.items():
        if not entry["available"]:
            continue
        assert entry["steps"] == size.steps, name
        points = [p["messages"] for p in entry["series"]]
        assert points == list(range(size.sample_every, size.steps + 1, size.sample_every))
        assert entry["stored"]["postgres_bytes"] > 0 and 0 < entry["p50_ms"] <= entry["p95_ms"]
        assert not entry["counters"].get("degraded_writes"), entry["counters"]
    assert savers["official_postgres"]["stored"]["redis_bytes"] == 0
    plain, zstd = savers["dual_plain"]["stored"], savers["dual_zstd"]["stored"]
    assert 0 < zstd["redis_bytes"] < plain["redis_bytes"]
    assert zstd["postgres_bytes"] < plain["postgres_bytes"]
    assert plain["object_bytes"] == zstd["object_bytes"] == 0
    if offload["available"]:  # the tool outputs went to the directory, and out of Redis
        assert offload["stored"]["object_files"] >= 1
        assert offload["stored"]["redis_bytes"] < zstd["redis_bytes"]
    aimed = {"dual_zstd", "dual_zstd_offload", "dual_zstd_chunked"}
    assert {a["saver"] for a in doc["aims"]} == aimed


def test_big_state_quick_writes_report_and_stops_its_servers(big_state_run: dict) -> None:
    out: Path = big_state_run["out"]
    report = (out / "big_state.md").read_text()
    for heading in ("## At 40 messages", "## Aims (issue 15)", "](big_state.png)"):
        assert heading in report
    assert (out / "big_state.png").read_bytes()[:8] == PNG_MAGIC
    pids = big_state_run["doc"]["servers"]["started_pids"]
    assert [pid for pid in pids if _alive(pid)] == []


# -- benchmarks/exclusive_cost.py --quick ---------------------------------------------

EXCLUSIVE_COST_TIMEOUT_S = 120


def test_exclusive_cost_quick_measures_both_modes_and_stops_its_servers(tmp_path: Path) -> None:
    from langgraph_dualsaver.chain.saver import MODES

    command = [sys.executable, str(ROOT / "benchmarks" / "exclusive_cost.py"), "--quick"]
    proc = subprocess.Popen(
        [*command, "--out", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=EXCLUSIVE_COST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(
            f"exclusive_cost --quick overran {EXCLUSIVE_COST_TIMEOUT_S}s:\n{output[-4000:]}"
        )
    assert proc.returncode == 0, output[-4000:]
    doc = json.loads((tmp_path / "exclusive_cost.json").read_text())
    results = doc["results"]
    assert set(results) == {f"{mode}@{c}" for mode in MODES for c in (1, 16)}
    for row in results.values():
        assert row["rate"]["off"] > 0 and row["rate"]["on"] > 0, row
        assert all(len(row["round_rates"][s]) == doc["rounds"] == 2 for s in ("off", "on"))
    report = (tmp_path / "exclusive_cost.md").read_text()
    for mode in MODES:
        assert f"| {mode} | 16 |" in report and f"| {mode} | 1 |" in report
    pids = doc["servers"]["started_pids"]
    assert len(pids) == 2 and [pid for pid in pids if _alive(pid)] == []
