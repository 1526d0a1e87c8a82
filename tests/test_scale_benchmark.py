"""The scale benchmark at its tiny size, end to end, and the capacity plan's arithmetic.

Nothing here asserts a timing: only that the run starts a cluster, PostgreSQL,
application and flush worker processes, writes scale.json / scale.md / scale.png of the
expected shape, and stops every server it started.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scale_plan import CHECKPOINTS_PER_DAY, GIB, derive_plan
from tests.test_benchmarks import PNG_MAGIC, _alive

ROOT = Path(__file__).resolve().parent.parent
TINY_TIMEOUT_S = 90
PLAN_FIGURES = {
    "checkpoints_per_s",
    "checkpoints_per_s_peak",
    "redis_memory_gib_24h",
    "redis_masters",
    "flush_workers",
    "postgres_disk_gib_per_day",
    "postgres_wal_gib_per_day",
    "postgres_disk_gib_per_day_value_compression",
    "postgres_disk_gib_per_day_filesystem_compression",
    "postgres_partitions",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the tiny size once in a subprocess; SIGTERM (then SIGKILL) it if it overruns."""
    out = tmp_path_factory.mktemp("scale")
    command = [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--size", "tiny"]
    proc = subprocess.Popen(
        [*command, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=TINY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"the tiny scale run overran {TINY_TIMEOUT_S}s:\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]
    return {"doc": json.loads((out / "scale.json").read_text()), "out": out}


def test_tiny_run_measures_both_kinds_of_configuration(tiny_run: dict) -> None:
    doc = tiny_run["doc"]
    assert doc["size"] == "tiny" and doc["finished_at"]
    assert doc["machine"]["cores"] >= 1
    assert len(doc["machine"]["load_average_at_start"]) == 3
    assert len(doc["machine"]["load_average_at_end"]) == 3
    assert {c["kind"] for c in doc["configs"]} == {"concurrent", "drain"}
    for config in doc["configs"]:
        assert config["steps"] > 0 and config["steps_per_s"] > 0, config["kind"]
        assert config["checkpoints"] >= config["steps"]  # every step durable, warm-up too
        assert config["workers_flushed"] >= config["outbox_entries_added"] > 0
        assert config["redis_bytes_per_checkpoint"] > 0
        assert config["postgres_bytes_per_checkpoint"] > 0
        assert config["postgres_wal_bytes_per_checkpoint"] > 0
        times = [row[0] for row in config["series"]]
        assert times == sorted(times) and len(times) >= 2
        assert config["series"][-1][1] == 0  # sampled until the outbox was empty
        compression = config["storage"]["compression"]
        assert compression["payload"]["method"].startswith(("zstd", "zlib"))
        assert 0 < compression["payload"]["ratio"] < 1.5
    drain = next(c for c in doc["configs"] if c["kind"] == "drain")
    assert drain["outbox_at_load_end"] > 0  # the held workers let the outbox fill
    assert drain["drain_per_s_per_worker_after_load"] > 0
    assert drain["outbox_stream_bytes_per_entry"] > 0


def test_tiny_run_plans_from_named_measurements(tiny_run: dict) -> None:
    figures = tiny_run["doc"]["plan"]["figures"]
    assert set(figures) >= PLAN_FIGURES
    for name, figure in figures.items():
        assert figure["value"] >= 0 and figure["unit"] and figure["how"], name
        assert figure["source"], f"{name} names no measurement"


def test_tiny_run_writes_report_and_plot(tiny_run: dict) -> None:
    out: Path = tiny_run["out"]
    report = (out / "scale.md").read_text()
    for heading in ("# Scale benchmark", "## Drain capacity", "## The plan's figures"):
        assert heading in report
    assert "](scale.png)" in report
    assert (out / "scale.png").read_bytes()[:8] == PNG_MAGIC


def test_tiny_run_stops_the_servers_it_started(tiny_run: dict) -> None:
    pids = tiny_run["doc"]["started_server_pids"]
    assert len(pids) == 4  # three Valkey masters and PostgreSQL
    assert [pid for pid in pids if _alive(pid)] == []


def _config(**fields: object) -> dict:
    base = {
        "kind": "drain",
        "apps": 2,
        "workers": 1,
        "checkpoints": 1000,
        "entries_per_step": 2.0,
        "redis_bytes_per_checkpoint": 4096.0,
        "outbox_stream_bytes_per_entry": 1024.0,
        "redis_cpu_ms_per_checkpoint": 0.1,
        "worker_cpu_ms_per_entry": 0.1,
        "drain_per_s_per_worker_after_load": 1000.0,
        "app_cpu_ms_per_step": 1.0,
        "postgres_cpu_ms_per_checkpoint": 0.1,
        "postgres_bytes_per_checkpoint": 2 * 4096.0,
        "postgres_wal_bytes_per_checkpoint": 4096.0,
        "storage": {
            "postgres": {"tables": {"dualsaver_checkpoints": {"rows": 1000, "bytes": 0}}},
            "compression": {
                "payload": {
                    "raw_bytes": 2_000_000,
                    "compressed_bytes": 1_000_000,
                    "ratio": 0.5,
                    "method": "zlib level 6",
                },
                "relation_files": {"ratio": 0.25, "method": "zlib level 6"},
            },
        },
    }
    return {**base, **fields}


@pytest.mark.pure
def test_plan_is_the_measurements_times_the_target() -> None:
    plan = derive_plan({"configs": [_config()]})
    figures = {name: f["value"] for name, f in plan["figures"].items()}
    peak = 3 * CHECKPOINTS_PER_DAY / 86_400
    assert figures["checkpoints_per_s_peak"] == pytest.approx(peak)
    assert figures["redis_memory_gib_24h"] == pytest.approx(CHECKPOINTS_PER_DAY * 4096 / GIB)
    assert figures["redis_masters"] == math.ceil(figures["redis_memory_gib_24h"] / 25)
    assert figures["flush_workers"] == math.ceil(2 * peak * 0.1 / 1000 / 0.7)
    assert figures["flush_workers_at_measured_wall_rate"] == math.ceil(2 * peak / 1000)
    disk = CHECKPOINTS_PER_DAY * 8192 / GIB
    assert figures["postgres_disk_gib_per_day"] == pytest.approx(disk)
    saved = CHECKPOINTS_PER_DAY * 1000 / GIB  # 1,000 bytes saved per checkpoint
    assert figures["postgres_disk_gib_per_day_value_compression"] == pytest.approx(disk - saved)
    assert figures["postgres_disk_gib_per_day_filesystem_compression"] == pytest.approx(disk / 4)
    needed = math.ceil(disk * 30 / 100)  # 30 days kept, 100 GiB per partition
    assert figures["postgres_partitions"] == 2 ** math.ceil(math.log2(needed))
    assert "at most 1024" in plan["figures"]["postgres_partitions"]["how"]
    assert figures["postgres_nodes_for_disk"] == math.ceil(disk * 30 / 1024 / 16)
    assert (
        "redis_bytes_per_checkpoint = 4,096 B" in plan["figures"]["redis_memory_gib_24h"]["source"]
    )


@pytest.mark.pure
def test_plan_refuses_a_run_with_nothing_measured() -> None:
    with pytest.raises(ValueError, match="no configurations"):
        derive_plan({"configs": []})
    with pytest.raises(ValueError, match="redis_cpu_ms_per_checkpoint"):
        derive_plan({"configs": [_config(redis_cpu_ms_per_checkpoint=None)]})
