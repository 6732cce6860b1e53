"""The ingest service in a process of its own, as `host serve` runs it (signals, worker
processes), and the tests' handle on it: ``python -m tests.host.ingest_process ARGS_JSON``
runs `ingest.serve`; `IngestProcess` starts that, waits until it answers and stops it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.host.ingest import IngestConfig, serve
from edge_agent.host.ingest_store import IngestStore
from edge_agent.sync import Enrollment, enroll, pinned_context, wire
from tests.sync_support import Cert, make_interaction

METRICS_TOKEN = "metrics-token-for-tests"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def batch_body(first: int, count: int) -> bytes:
    records = [
        make_interaction(i).model_dump(mode="json", exclude={"synced"})
        for i in range(first, first + count)
    ]
    return json.dumps({"protocol": 1, "records": records}).encode()


@dataclass
class IngestProcess:
    """`store`: a SQLite file or a postgresql:// URL."""

    store: str
    cert: Cert
    workers: int = 1
    graceful_timeout_s: float = 30.0
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)
    _reader: threading.Thread = field(init=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> IngestProcess:
        args = {
            "store": self.store,
            "cert": [str(self.cert.cert), str(self.cert.key), self.cert.sha256],
            "port": self.port,
            "workers": self.workers,
            "graceful_timeout_s": self.graceful_timeout_s,
        }
        argv = [sys.executable, "-m", "tests.host.ingest_process", json.dumps(args)]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        self._wait_until_up()
        return self

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, "".join(self.log)
            with contextlib.suppress(httpx.TransportError), self.client() as c:
                if c.get("/healthz").status_code == 200 and self._all_workers_up():
                    return
            time.sleep(0.2)
        raise AssertionError(
            "the ingest service did not come up within 60 s:\n" + "".join(self.log)
        )

    def _all_workers_up(self) -> bool:
        started = sum("Application startup complete" in line for line in self.log)
        return started >= self.workers

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def wait_for_log(self, text: str, count: int = 1) -> None:
        deadline = time.monotonic() + 30
        while sum(text in line for line in self.log) < count:
            assert time.monotonic() < deadline, f"no {text!r} in the log:\n" + "".join(self.log)
            time.sleep(0.05)

    def client(self, credential: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        return httpx.Client(
            base_url=self.url, verify=pinned_context(self.cert.pem), headers=headers, timeout=60
        )

    def enroll(self) -> Enrollment:
        store = IngestStore(self.store)  # a second connection, as the CLI's `enroll-token` has
        try:
            token = store.create_token(600)
        finally:
            store.close()
        return enroll(self.url, token, pin=self.cert.sha256)

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of a fresh /metrics scrape (its own connection: any worker may answer)."""
        with self.client(METRICS_TOKEN) as c:
            text = c.get("/metrics").raise_for_status().text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def worker_pids(self) -> list[int]:
        """The worker processes (uvicorn spawns them; none with one worker: it is the process)."""
        assert self.proc is not None
        if self.workers == 1:
            return [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        pids = [int(p) for p in children.split()]
        return [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]

    def __enter__(self) -> IngestProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            workers = self.worker_pids() if self.workers > 1 else []
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # no orphans: a killed parent leaves its workers
                for pid in [*workers, self.proc.pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._reader.join(timeout=30)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


class SlowPost:
    """A batch POST over its own TLS connection, sent in two halves: between them the request
    is in flight (headers read, body incomplete) for as long as the test likes."""

    def __init__(self, host: IngestProcess, credential: str, key: str, body: bytes) -> None:
        raw = socket.create_connection(("127.0.0.1", host.port), timeout=60)
        self.sock = pinned_context(host.cert.pem).wrap_socket(raw)
        head = (
            f"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {credential}"
            f"\r\n{wire.KEY_HEADER}: {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.key, self.rest = key, body[len(body) // 2 :]
        self.sock.sendall(head + body[: len(body) // 2])

    def finish(self) -> int | None:
        """Sends the rest; the answer's status, or None when the connection closed unanswered."""
        try:
            self.sock.sendall(self.rest)
            with self.sock.makefile("rb") as answer:
                status_line = answer.readline()
        except (OSError, ssl.SSLError):
            return None
        finally:
            self.sock.close()
        return int(status_line.split()[1]) if status_line else None


def in_flight(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return samples[("edge_agent_ingest_in_flight", ())]


def wait_in_flight(host: IngestProcess, count: int) -> None:
    """Until `count` requests besides the scrape itself are being handled, on any worker."""
    deadline = time.monotonic() + 30
    while in_flight(host.scrape()) < count + 1:
        assert time.monotonic() < deadline, f"never {count} requests in flight"
        time.sleep(0.05)


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """A worker paused (SIGSTOP): the other workers accept every new connection meanwhile."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _main() -> None:
    args: dict[str, Any] = json.loads(sys.argv[1])
    certfile, keyfile, sha256 = args["cert"]
    store = args["store"]
    url = store if "://" in store else None
    config = IngestConfig(
        db_path=Path(store) if url is None else Path("unused.db"),
        cert_sha256=sha256,
        metrics_token=METRICS_TOKEN,
        retention_days=None,
    )
    if url is not None:
        config = replace(config, database_url=url)
    serve(
        config,
        host="127.0.0.1",
        port=args["port"],
        certfile=Path(certfile),
        keyfile=Path(keyfile),
        workers=args["workers"],
        graceful_timeout_s=args["graceful_timeout_s"],
    )


if __name__ == "__main__":
    _main()
