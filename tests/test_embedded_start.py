"""Embedded servers: a start that fails part way leaves no process behind.

A process is found by its working directory: valkey-server and postgres (and every
backend it forks) change into their data dirs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from langgraph_dualsaver.embedded import (
    EmbeddedPostgres,
    EmbeddedServerError,
    EmbeddedValkey,
    remove_tree,
    shared_servers,
    throwaway_dir,
)


def processes_in(directory: Path) -> list[int]:
    """PIDs whose working directory is ``directory`` or below it."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")).is_relative_to(directory.resolve()):
                    found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def kill_leftovers(directory: Path) -> None:
    """SIGKILL, by PID, whatever a failed test left running in ``directory``."""
    leftovers = processes_in(directory)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(not gone(pid) for pid in leftovers) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A data dir the postgres system user can reach; emptied of processes and removed."""
    path = throwaway_dir("dualsaver-start-")
    try:
        yield path
    finally:
        kill_leftovers(path)
        remove_tree(path)


# -- a failed start stops what it started ---------------------------------------------


@pytest.mark.parametrize("kind", [EmbeddedValkey, EmbeddedPostgres])
def test_a_server_not_ready_in_time_is_stopped_before_the_error(
    kind: type[EmbeddedValkey | EmbeddedPostgres], server_dir: Path
) -> None:
    server = kind(server_dir, start_timeout=0)
    with pytest.raises(EmbeddedServerError, match="was not ready in 0 s") as raised:
        server.start()
    assert raised.value.pid is not None and gone(raised.value.pid)
    assert processes_in(server_dir) == []
    assert not server.is_running()


def test_a_failed_postgres_start_stops_the_valkey_started_before_it(server_dir: Path) -> None:
    # A file where the cluster's directory belongs: initdb fails, after Valkey started.
    (server_dir / "postgres").mkdir()
    (server_dir / "postgres" / "pgdata").write_text("not a directory")
    with pytest.raises(EmbeddedServerError, match="initdb failed"):
        shared_servers(server_dir)
    assert (server_dir / "valkey" / "valkey.log").exists()  # Valkey did start
    assert processes_in(server_dir) == []
    assert not (server_dir / "servers.json").exists()
