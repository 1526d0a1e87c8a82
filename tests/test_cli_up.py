"""``dualsaver up``: real embedded servers in the foreground, stopped cleanly by SIGINT.

The test starts ``python -m langgraph_dualsaver up`` with ``DUALSAVER_HOME`` in a fresh
directory, reads the URLs and PIDs it prints, connects to both servers, then sends
SIGINT. Whatever happens, the fixture kills by PID what is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
import redis
from typer.testing import CliRunner

from langgraph_dualsaver.cli.app import app
from tests.servers import remove_tree, throwaway_dir
from tests.test_cli import REPO

START_TIMEOUT_S = 90.0


@dataclass
class Up:
    proc: subprocess.Popen[str]
    home: Path
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    def read_until(self, marker: str, timeout: float = START_TIMEOUT_S) -> str:
        """Everything printed up to the line holding ``marker``."""
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.seen):
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} within {timeout}s; output: {self.seen}"
            try:
                self.seen.append(self.lines.get(timeout=min(left, 0.5)))
            except queue.Empty:
                assert self.proc.poll() is None, f"`up` exited early: {self.seen}"
        return "".join(self.seen)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def up() -> Iterator[Up]:
    home = throwaway_dir("dualsaver-up-")  # traversable by the postgres system user
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUALSAVER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "langgraph_dualsaver", "up"],
        env={**env, "DUALSAVER_HOME": str(home)},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Up(proc, home)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            running.lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pid in running.pids:  # servers run in their own sessions: not killed with `up`
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        remove_tree(home)


def test_up_runs_both_servers_until_sigint_then_stops_them(up: Up):
    output = up.read_until("Ctrl-C or SIGTERM stops them.")
    redis_url = re.search(r"^export DUALSAVER_REDIS_URL=(\S+)$", output, re.M).group(1)
    postgres_url = re.search(r"^export DUALSAVER_POSTGRES_URL=(\S+)$", output, re.M).group(1)
    up.pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", output)]
    assert len(up.pids) == 2 and all(alive(pid) for pid in up.pids)
    assert f"data in     {up.home}" in output

    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
    finally:
        client.close()

    async def select_one() -> int:
        conn = await asyncpg.connect(postgres_url)
        try:
            return await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    assert asyncio.run(select_one()) == 1

    # Another command with only DUALSAVER_HOME set finds the same servers.
    env = {"DUALSAVER_HOME": str(up.home), "DUALSAVER_REDIS_URL": None,
           "DUALSAVER_POSTGRES_URL": None}  # fmt: skip
    status = CliRunner().invoke(app, ["status", "--json"], env=env)
    assert status.exit_code == 0, status.output
    assert redis_url in status.stdout and "started the embedded servers" not in status.output

    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(timeout=60) == 0
    assert "stopped" in up.read_until("stopped", timeout=10)
    assert not any(alive(pid) for pid in up.pids)
    pgdata = up.home / "postgres" / "pgdata"
    assert (pgdata / "PG_VERSION").exists() and not (pgdata / "postmaster.pid").exists()
