"""A throwaway PostgreSQL server for tests: `initdb` + `pg_ctl` from the Debian `postgresql`
package into a temporary folder, listening on a free 127.0.0.1 port and a unix socket in that
folder, fsync off (nothing here has to survive a crash). Each test gets its own database.

initdb refuses to run as root, so as root the cluster belongs to an unprivileged user
(`postgres` where the package made one, else `nobody`) and its commands run through `runuser`;
the tests connect over TCP as the cluster's superuser (trust auth, loopback only)."""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "edge"


def bindir() -> Path | None:
    """Where initdb and pg_ctl are: PATH, `pg_config --bindir`, or the newest Debian version."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, check=True, text=True)
        if (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    return Path(versions[-1]).parent if versions else None


def _version(path: str) -> float:
    with contextlib.suppress(ValueError):
        return float(path.split("/")[4])
    return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One cluster for a test session; `database()` makes a fresh database and its URL."""

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        """`durable`: fsync and synchronous commits on, as a production server (benchmarks)."""
        self.bin, self.durable = bin_dir, durable
        self.user = _unprivileged_user() if os.geteuid() == 0 else None
        # Not under pytest's tmp dir: its parents are 0700 root, which the cluster user can't enter
        self.root = Path(tempfile.mkdtemp(prefix="edge-pg-"))
        self.data, self.port = self.root / "data", _free_port()
        self.names = itertools.count()

    def start(self) -> PgServer:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 "
        options += f"-c unix_socket_directories={self.root}"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        self._run("pg_ctl", "start", "-w", "-D", self.data, "-l", self.root / "log", "-o", options)
        return self

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database (a copy of template0); its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self.names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def drop(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _run(self, program: str, *args: object) -> None:
        argv = [str(self.bin / program), *map(str, args)]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        done = subprocess.run(argv, check=False, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise subprocess.CalledProcessError(
                done.returncode, argv, done.stdout, done.stderr + tail
            )


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root, and no postgres or nobody user to run PostgreSQL as")
