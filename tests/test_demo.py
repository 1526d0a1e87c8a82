"""``make demo`` end to end: the demo as a subprocess on the test session's servers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import fresh_database, fresh_prefix

REPO_ROOT = Path(__file__).resolve().parent.parent
CLAIMS = [
    "\u2714 interrupted: policy_agent waits for a human",
    "an interrupt forces the outbox through",
    "with SIGKILL before policy_agent (exit code -9)",
    "\u2714 the killed child ran intake, billing_agent and account_agent;",
    "\u2714 resumed: intake, billing_agent and account_agent ran once in all",
    "\u2714 the $49.99 duplicate was refunded without a human",
    "\u2714 resumed with the reviewer's decision: $650.00 refund approved",
    "\u2714 the fork went to human review instead",
    "\u2714 the original branch is intact",
    "\u2714 recorded as policy_agent's output: next is response_agent",
    "\u2714 the run continued from the correction",
    "\u2714 each section's writer is on record",
    "outbox lag now 0",
]


@pytest.fixture
def demo_env(redis_url: str, postgres_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The demo's environment: the session's servers, a fresh database and key prefix,
    and a data dir of its own (so the user's per-user servers are never touched)."""
    with fresh_database(postgres_url) as dsn, fresh_prefix(redis_url) as prefix:
        yield {
            **os.environ,
            "DUALSAVER_REDIS_URL": redis_url,
            "DUALSAVER_POSTGRES_URL": dsn,
            "DUALSAVER_PREFIX": prefix,
            "DUALSAVER_HOME": str(tmp_path / "home"),
            "COLUMNS": "160",
        }


def run_demo(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the demo in its own process group, so its crash child goes with it if the
    demo has to be killed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "langgraph_dualsaver.app.demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=REPO_ROOT,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_demo_tells_the_whole_story_twice_on_the_same_stores(demo_env: dict[str, str]) -> None:
    """Both modes, one after the other on the same database and key prefix: a rerun
    starts fresh threads and never trips over the previous run's data."""
    threads = []
    for mode in ("write_behind", "write_through"):
        result = run_demo(demo_env, "--mode", mode)

        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        missing = [claim for claim in CLAIMS if claim not in result.stdout]
        assert not missing, result.stdout
        assert "\u2718" not in result.stdout
        assert f"mode {mode}" in result.stdout
        for step in range(1, 8):
            assert re.search(rf"^─* ?{step}\. ", result.stdout, re.MULTILINE), step
        # The child the demo killed is gone.
        pid = int(re.search(r"killed child pid (\d+)", result.stdout).group(1))
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        threads.append(re.search(r"thread (case_8842-\w+)\n", result.stdout).group(1))
    assert threads[0] != threads[1]


def test_readme_quickstart_runs_as_written(demo_env: dict[str, str]) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) < 20

    result = subprocess.run(
        [sys.executable, "-c", code],
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )

    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "('policy_agent',)"
    assert "A refund of $650.00 is approved" in lines[1]
    writers = {tuple(line.split()[1:3]) for line in lines[2:]}
    assert writers == {
        ("billing_agent", "billing"),
        ("account_agent", "account"),
        ("policy_agent", "policy"),
    }


def test_the_demo_shows_the_story_and_logs_the_rest_to_a_file(
    demo_env: dict[str, str], redis_url: str
) -> None:
    """On a Redis that looks restarted (its recorded run_id is another), the saver logs
    a warning and evicts; the terminal shows none of it, the log file does."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(f"{demo_env['DUALSAVER_PREFIX']}:server", "an-earlier-run-id")
    finally:
        client.close()
    result = run_demo(demo_env, "--mode", "write_behind")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Redis restarted" not in result.stdout + result.stderr
    assert "Warning" not in result.stderr
    log = Path(demo_env["DUALSAVER_HOME"]) / "demo.log"
    assert "Redis restarted" in log.read_text()
