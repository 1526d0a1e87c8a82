"""A thread started in one process is resumed by another while the server lives: after
a human-in-the-loop question, and after the first process was killed mid-run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from langgraph_dualsaver.hot.saver import RedisHotSaver

SCRIPT = Path(__file__).parent / "scripts" / "redis_graph.py"
ROOT = Path(__file__).parent.parent


def run(redis_url: str, prefix: str, thread: str, mode: str, work: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), redis_url, prefix, thread, mode, str(work)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def runs(work: Path) -> list[tuple[str, int]]:
    path = work / "runs"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(name, int(pid)) for name, pid in (line.split() for line in lines)]


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; killed by PID at the end, however the test ends."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_an_interrupted_thread_is_answered_from_another_process(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    asked = run(redis_url, redis_prefix, "hitl", "ask", tmp_path)
    assert asked["next"] == ["review"]
    assert asked["interrupts"] == [{"question": "approve?"}]

    answered = run(redis_url, redis_prefix, "hitl", "answer", tmp_path)
    assert answered["steps"] == ["prepare", "review:approved", "finish"]
    assert answered["next"] == []
    names = [name for name, _ in runs(tmp_path)]
    assert names == ["prepare", "finish"]  # prepare ran once, in the first process
    assert len({pid for _, pid in runs(tmp_path)}) == 2


async def test_a_killed_run_resumes_in_a_new_process_without_rerunning_finished_nodes(
    redis_url: str, redis_prefix: str, tmp_path: Path, spawned: list[subprocess.Popen]
) -> None:
    args = [redis_url, redis_prefix, "killed", "slow", str(tmp_path)]
    first = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    spawned.append(first)
    async with RedisHotSaver.from_conn_string(redis_url, prefix=redis_prefix) as saver:
        deadline = time.monotonic() + 60
        while True:  # until "a" ran and its step's checkpoint is saved (b is now waiting)
            latest = await saver.aget_tuple({"configurable": {"thread_id": "killed"}})
            if latest is not None and latest.checkpoint["channel_values"].get("steps") == ["a"]:
                break
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    first.kill()
    first.wait(timeout=10)

    (tmp_path / "release").touch()
    finished = run(redis_url, redis_prefix, "killed", "finish", tmp_path)
    assert finished["steps"] == ["a", "b", "c"]
    ran = runs(tmp_path)
    assert [name for name, _ in ran] == ["a", "b", "c"]
    assert ran[0][1] == first.pid and {pid for _, pid in ran[1:]} != {first.pid}
