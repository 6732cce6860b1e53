"""Prometheus metrics of the ingest service, in a registry of its own (one per app).

Several worker processes (`host serve --workers N`) share one folder, PROMETHEUS_MULTIPROC_DIR,
set before they start: prometheus_client's multiprocess mode then keeps each process's values
in files there, and whichever worker a scrape reaches sums them all (`MultiProcessCollector`).

No metric is labelled by device: a label per device would grow without bound and say which
devices are active to whoever can scrape."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from edge_agent.settings import create_private_file
from edge_agent.sync.wire import BatchResult

if TYPE_CHECKING:
    from edge_agent.host.ingest_store import IngestStore

_PREFIX = "edge_agent_ingest"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it when first imported


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            f"{_PREFIX}_requests", "HTTP requests", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            f"{_PREFIX}_request_seconds", "request latency", ["route"], registry=r
        )
        self.batches = Counter(f"{_PREFIX}_batches", "batches by outcome", ["outcome"], registry=r)
        self.records = Counter(f"{_PREFIX}_records", "records by outcome", ["outcome"], registry=r)
        self.bytes = Counter(f"{_PREFIX}_wire_bytes", "batch bytes received", registry=r)
        self.enrollments = Counter(f"{_PREFIX}_enrollments", "enrollments", ["outcome"], registry=r)
        self.auth_failures = Counter(f"{_PREFIX}_auth_failures", "refused credentials", registry=r)
        # Read from the store at each scrape: across workers, the latest scrape's count.
        self.devices = Gauge(
            f"{_PREFIX}_devices", "enrolled devices", registry=r, multiprocess_mode="mostrecent"
        )
        # Across workers, the sum over live ones; a worker that has exited counts none.
        self.in_flight = Gauge(
            f"{_PREFIX}_in_flight",
            "requests being handled",
            registry=r,
            multiprocess_mode="livesum",
        )

    def count(self, result: BatchResult, replayed: bool, wire_bytes: int) -> None:
        self.bytes.inc(wire_bytes)
        if replayed:
            self.batches.labels("replayed").inc()
            return
        self.batches.labels("stored").inc()
        self.records.labels("stored").inc(result.stored)
        self.records.labels("duplicate").inc(result.duplicates)

    def instrument(self, app: FastAPI) -> None:
        @app.middleware("http")
        async def observe(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            started = time.perf_counter()
            with self.in_flight.track_inprogress():
                response = await call_next(request)
            route = request.scope.get("route")
            name = getattr(route, "path", "other")  # the template: no keys or ids as labels
            self.requests.labels(name, str(response.status_code)).inc()
            self.latency.labels(name).observe(time.perf_counter() - started)
            return response

    def render(self, store: IngestStore) -> Response:
        self.devices.set(len(store.devices()))
        return Response(generate_latest(self._exposed()), media_type=CONTENT_TYPE_LATEST)

    def _exposed(self) -> CollectorRegistry:
        """This process's registry, or with several workers every worker's values summed."""
        if not os.environ.get(MULTIPROC_ENV):
            return self.registry
        _forget_killed_workers(os.environ[MULTIPROC_ENV])
        registry = CollectorRegistry()  # fresh each time: the collector reads the files now
        multiprocess.MultiProcessCollector(registry)
        return registry


def _forget_killed_workers(folder: str) -> None:
    """A worker killed outright never said it stopped: its requests in flight would count
    forever. Its live gauges go once its process is gone."""
    for path in Path(folder).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, folder)
        except PermissionError:  # alive, someone else's: not one of ours, but alive
            continue


def forget_worker(pid: int) -> None:
    """A worker process has exited: its live gauges (requests in flight) leave the sums."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


def ensure_metrics_token(path: Path) -> str:
    """The token /metrics asks for, kept in `path` (0600): made on first use, then reused so
    a scraper configured once keeps working across restarts."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    if create_private_file(path, (token + "\n").encode()):
        return token
    path.chmod(0o600)
    return path.read_text().strip()
