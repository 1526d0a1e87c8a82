"""Across processes: a thread outlives the process that ran it; setup() runs safely from
several processes at once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import asyncpg

from langgraph_dualsaver.durable import sql as sql
from langgraph_dualsaver.durable.saver import PostgresDurableSaver

SCRIPTS = Path(__file__).parent / "scripts"


def review(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "postgres_review.py"), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


async def migration_history(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["v"] for r in await conn.fetch("SELECT v FROM dualsaver_migrations ORDER BY v")]
    finally:
        await conn.close()


def test_an_interrupted_thread_is_resumed_by_another_process(pg_dsn: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs.log"

    started = review(pg_dsn, "refund-1", str(runs), "start")
    resumed = review(pg_dsn, "refund-1", str(runs), "resume", "approved")

    assert started == {"steps": ["prepare"], "interrupt": {"refund": 612}}
    assert resumed == {
        "waiting_on": ["approve"],
        "steps": ["prepare", "approve:approved", "pay"],
        "amount": 612,
    }
    # prepare ran once, in the first process; approve runs again to receive the answer.
    assert runs.read_text().split() == ["prepare", "approve", "approve", "pay"]


def test_setup_from_two_processes_at_once(pg_dsn: str, tmp_path: Path) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = str(SCRIPTS / "postgres_setup.py")
    procs: list[subprocess.Popen[str]] = []
    try:
        for name in ("first", "second"):
            args = [sys.executable, script, pg_dsn, str(barrier), name, "2"]
            procs.append(subprocess.Popen(args, stdout=PIPE, stderr=PIPE, text=True))
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    assert asyncio.run(migration_history(pg_dsn)) == list(range(len(sql.MIGRATIONS)))


async def test_concurrent_and_repeated_setup_leave_one_history(pg_dsn: str) -> None:
    savers = [PostgresDurableSaver.from_conn_string(pg_dsn) for _ in range(4)]
    try:
        await asyncio.gather(*(saver.asetup() for saver in savers))
        first = await migration_history(pg_dsn)
        await savers[0].asetup()
    finally:
        await asyncio.gather(*(saver.aclose() for saver in savers))

    assert first == await migration_history(pg_dsn) == list(range(len(sql.MIGRATIONS)))
