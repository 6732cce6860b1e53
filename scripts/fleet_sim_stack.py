"""What the fleet simulator (scripts/fleet_sim.py) runs the devices against: a PostgreSQL
server (the tests' `PgServer`: initdb + pg_ctl in a temporary folder, root-safe), `edge-agent
host serve --workers K` as an operator starts it, the fault proxy in its own process, and the
check of the store against what the devices were acknowledged."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.host.ingest_store import IngestStore
from edge_agent.sync import pinned_context
from tests.sync_support import Cert

ROOT = Path(__file__).resolve().parents[1]
METRICS_TOKEN = "fleet-sim-metrics-token"


def start_postgres() -> Any:
    """A durable PostgreSQL server (fsync and synchronous commits on, as SQLite's FULL sync),
    or None when initdb or psycopg is missing."""
    try:
        import psycopg  # noqa: F401

        from tests.pg_support import PgServer, bindir
    except ImportError:
        return None
    found = bindir()
    return PgServer(found, durable=True).start() if found else None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HostProcess:
    """`edge-agent host serve` in a process of its own, its home in `home`; `store` is the
    PostgreSQL URL, or None for the host folder's SQLite file."""

    home: Path
    cert: Cert
    workers: int
    store: str | None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        """Where the ingest store is, as `IngestStore` takes it."""
        return self.store or str(self.home / "data" / "host" / "ingest.db")

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
        env["EDGE_AGENT_HOME"] = str(self.home)
        if self.store:
            env["EDGE_AGENT_HOST_DATABASE_URL"] = self.store
        return env

    def start(self) -> HostProcess:
        argv = [sys.executable, "-m", "edge_agent", "host", "serve", "--host", "127.0.0.1",
                "--port", str(self.port), "--cert", str(self.cert.cert), "--key",
                str(self.cert.key), "--workers", str(self.workers),
                "--metrics-token", METRICS_TOKEN]  # fmt: skip
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "serve.log").open("wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        self._wait_until_up()
        return self

    def log(self) -> str:
        path = self.home / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError("host serve exited:\n" + self.log()[-3000:])
            up = self.log().count("Application startup complete") >= self.workers
            with contextlib.suppress(httpx.TransportError), self.client() as c:
                if up and c.get("/healthz").status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError("host serve did not come up within 120 s:\n" + self.log()[-3000:])

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url, verify=pinned_context(self.cert.pem), headers=headers, timeout=60
        )

    def tokens(self, count: int) -> list[str]:
        """One-time enrollment tokens, as `host enroll-token` makes them (in the store)."""
        store = IngestStore(self.target)
        try:
            return [store.create_token(3600) for _ in range(count)]
        finally:
            store.close()

    def errors_5xx(self) -> int:
        """5xx answers the workers gave (all of them, /metrics in multiprocess mode), also
        those the proxy never passed on."""
        with self.client(METRICS_TOKEN) as c:
            text = c.get("/metrics").raise_for_status().text
        return int(
            sum(
                s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "edge_agent_ingest_requests_total"
                and s.labels.get("status", "").startswith("5")
            )
        )

    def stop(self) -> None:
        """SIGTERM: the workers finish what is in flight, then exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ProxyProcess:
    """scripts/fleet_sim_proxy.py: the fault proxy in front of `upstream_port`."""

    def __init__(self, upstream_port: int, cert: Cert, weights: Mapping[str, float]) -> None:
        script = str(ROOT / "scripts" / "fleet_sim_proxy.py")
        argv = [sys.executable, script, str(upstream_port), str(cert.cert), str(cert.key),
                cert.sha256, json.dumps(dict(weights)), "7"]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.out: IO[str] = self.proc.stdout
        self.url = self.out.readline().strip()
        if not self.url.startswith("https://"):
            self.proc.kill()
            raise RuntimeError("the fault proxy did not start")

    def stop(self) -> dict[str, int]:
        """Stops it; the faults it applied, by kind."""
        self.proc.send_signal(signal.SIGTERM)
        counts = self.out.readline().strip()
        self.proc.wait(timeout=30)
        return dict(json.loads(counts)) if counts else {}


@dataclass(frozen=True)
class Check:
    stored: int  # records in the store
    lost: int  # acknowledged to a device, not in the store
    duplicated: int  # a (device, record id) stored more than once
    unacknowledged: int  # stored, never acknowledged (a device that gave up on a batch)


def check_store(target: str, acknowledged: Mapping[str, set[str]]) -> Check:
    """The store against what each device was acknowledged."""
    store = IngestStore(target)
    try:
        rows = store.engine.read("SELECT device_id, id, count(*) FROM records GROUP BY 1, 2")
    finally:
        store.close()
    stored = {(d, i) for d, i, _ in rows}
    acked = {(d, i) for d, ids in acknowledged.items() for i in ids}
    return Check(
        stored=sum(int(n) for _, _, n in rows),
        lost=len(acked - stored),
        duplicated=sum(int(n) - 1 for _, _, n in rows),
        unacknowledged=len(stored - acked),
    )


class CpuClock:
    """CPU seconds (user + system) each part of the simulation used between two readings:
    a process and its descendants (the workers under `host serve`, the backends under
    PostgreSQL's postmaster), or, for the names in `alone`, the process by itself (the
    devices' process is the parent of the others)."""

    def __init__(self, parts: Mapping[str, int | None], alone: Sequence[str] = ()) -> None:
        self.parts = {name: pid for name, pid in parts.items() if pid is not None}
        self.alone = set(alone)
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        import psutil

        used = {}
        for name, pid in self.parts.items():
            with contextlib.suppress(psutil.Error):
                top = psutil.Process(pid)
                tree = [top] if name in self.alone else [top, *top.children(recursive=True)]
                used[name] = sum(_cpu(p) for p in tree)
        return used

    def elapsed(self) -> dict[str, float]:
        now = self._read()
        return {name: round(now[name] - self.start.get(name, 0.0), 1) for name in now}


def _cpu(process: Any) -> float:
    import psutil

    try:
        times = process.cpu_times()
    except psutil.Error:  # it exited meanwhile
        return 0.0
    return float(times.user + times.system)


def postmaster_pid(pg: Any) -> int | None:
    """The PostgreSQL server's main process (its data folder's postmaster.pid)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return int((pg.data / "postmaster.pid").read_text().split()[0])
    return None
