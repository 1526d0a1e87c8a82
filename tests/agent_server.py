"""LangGraph's Agent Server (``langgraph dev``) as a child process, and direct reads of
what it left in Valkey and PostgreSQL.

The server runs the example project (``examples/agent_server``) copied into a temporary
directory, with the held graph of ``tests/held_graph.py`` beside it, on a free loopback
port. It logs JSON lines (``LOG_JSON``) to a file the tests read. Nothing it does leaves
this machine: the CLI's analytics, the version check and LangSmith tracing are off.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import redis.asyncio as aredis

from langgraph_dualsaver.embedded import free_port
from langgraph_dualsaver.hot import keys as K
from langgraph_dualsaver.records import decode_metadata

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "agent_server"
HELD_GRAPH = Path(__file__).resolve().parent / "held_graph.py"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
QUIET_ENV = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
    "LANGSMITH_TRACING_V2": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "LOG_JSON": "true",
    "LOG_COLOR": "false",
}
_DROPPED_ENV = ("DUALSAVER_SCHEMA", "DUALSAVER_OUTBOX_KEY", "LANGSMITH_API_KEY")

T = TypeVar("T")


def served_project(target: Path) -> Path:
    """The example project in ``target``, plus the held graph (id ``held``)."""
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".langgraph*"))
    shutil.copy(HELD_GRAPH, target / "held_graph.py")
    config_path = target / "langgraph.json"
    config = json.loads(config_path.read_text())
    config["graphs"]["held"] = "./held_graph.py:graph"
    config_path.write_text(json.dumps(config, indent=2))
    return target


def server_env(redis_url: str, postgres_url: str, prefix: str, gate_dir: Path) -> dict[str, str]:
    """The environment of the server: the DUALSAVER_* URLs of the test servers."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env.update(QUIET_ENV)
    env.update(
        DUALSAVER_REDIS_URL=redis_url,
        DUALSAVER_POSTGRES_URL=postgres_url,
        DUALSAVER_PREFIX=prefix,
        DUALSAVER_MODE="write_behind",
        DUALSAVER_TEST_GATE_DIR=str(gate_dir),
    )
    return env


@dataclass
class AgentServer:
    """A running ``langgraph dev`` process we started, known by its PID."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def events(self) -> list[dict[str, Any]]:
        """The server's log, one dict per line (``{"event": line}`` for a non-JSON line)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            found.append(parsed if isinstance(parsed, dict) else {"event": line})
        return found

    def messages(self) -> list[str]:
        return [str(e.get("event", "")) for e in self.events()]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int:
        """SIGTERM (graceful: the server leaves the checkpointer's context), then SIGKILL
        past ``STOP_TIMEOUT_S``. Returns the exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def _wait_ready(server: AgentServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise AssertionError(f"langgraph dev exited early:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/ok", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"langgraph dev not ready in {START_TIMEOUT_S}s:\n{server.log_tail()}"
            )
        time.sleep(0.1)


@contextmanager
def agent_server(project: Path, env: dict[str, str]) -> Iterator[AgentServer]:
    """``langgraph dev`` on a free loopback port in ``project``; stopped by PID on exit,
    even when the test fails."""
    port = free_port()
    command = [
        sys.executable, "-m", "langgraph_cli", "dev", "--host", "127.0.0.1",
        "--port", str(port), "--no-browser", "--no-reload", "--config", "langgraph.json",
    ]  # fmt: skip
    log_path = project / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=project, env=env, stdout=log, stderr=log)
    server = AgentServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        server.stop()


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, timeout: float = 30.0
) -> T:
    """Call ``probe`` until ``done(result)``; the last result, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {result!r}")
        await asyncio.sleep(0.05)


# -- the stores, read directly ----------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """One tier's view of a thread: checkpoint id -> metadata run_id, and the ids of
    the checkpoints that have pending writes."""

    checkpoints: dict[str, str | None]
    written: frozenset[str]

    def of_run(self, run_id: str) -> set[str]:
        return {cp for cp, run in self.checkpoints.items() if run == run_id}

    def runs(self) -> set[str | None]:
        return set(self.checkpoints.values())


async def in_valkey(redis_url: str, prefix: str, thread_id: str) -> Stored:
    """The thread's checkpoints and writes as Valkey holds them (raw keys, decoded here)."""
    tk = K.thread_keys(prefix, K.DEFAULT_SHARDS, thread_id)
    client = aredis.Redis.from_url(redis_url)
    try:
        fields = await client.hgetall(tk.cp)
        members = await client.zrange(tk.writes, 0, -1)
    finally:
        await client.aclose()
    checkpoints = {}
    for field, value in fields.items():
        ns, checkpoint_id = K.split_cp_field(field)
        assert ns == "", f"unexpected namespace {ns!r}"
        metadata = decode_metadata(K.decode_stored_checkpoint(value).metadata)
        checkpoints[checkpoint_id] = metadata.get("run_id")
    written = frozenset(K.split_cp_field(K.split_write_member(m)[0])[1] for m in members)
    return Stored(checkpoints, written)


async def in_postgres(dsn: str, thread_id: str) -> Stored:
    """The thread's checkpoints and writes as PostgreSQL holds them."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT checkpoint_ns, checkpoint_id, metadata->>'run_id' AS run_id "
            "FROM dualsaver_checkpoints WHERE thread_id = $1",
            thread_id,
        )
        written = await conn.fetch(
            "SELECT DISTINCT checkpoint_id FROM dualsaver_writes WHERE thread_id = $1", thread_id
        )
    finally:
        await conn.close()
    assert all(r["checkpoint_ns"] == "" for r in rows), "unexpected namespace"
    return Stored(
        {r["checkpoint_id"]: r["run_id"] for r in rows},
        frozenset(r["checkpoint_id"] for r in written),
    )


async def outbox_length(redis_url: str, prefix: str) -> int:
    """Entries of the prefix not yet durable in PostgreSQL (acknowledged ones are deleted)."""
    client = aredis.Redis.from_url(redis_url)
    try:
        lengths = [await client.xlen(K.outbox_key(prefix, s)) for s in range(K.DEFAULT_SHARDS)]
    finally:
        await client.aclose()
    return sum(lengths)


async def snapshot(
    redis_url: str, prefix: str, dsn: str, thread_id: str
) -> tuple[int, Stored, Stored]:
    """The outbox length, then Valkey's and PostgreSQL's view of the thread."""
    queued = await outbox_length(redis_url, prefix)
    return queued, await in_valkey(redis_url, prefix, thread_id), await in_postgres(dsn, thread_id)


async def stores_agree(
    redis_url: str, prefix: str, dsn: str, thread_id: str, done: Callable[[Stored], bool]
) -> tuple[Stored, Stored]:
    """Wait until the outbox is drained, PostgreSQL holds the checkpoints Valkey holds
    and Valkey's view satisfies ``done``; return both views."""
    _, valkey, postgres = await eventually(
        lambda: snapshot(redis_url, prefix, dsn, thread_id),
        lambda s: s[0] == 0 and s[1].checkpoints == s[2].checkpoints and done(s[1]),
        f"the outbox to drain and both stores to agree on thread {thread_id}",
    )
    return valkey, postgres
