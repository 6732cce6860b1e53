"""Prometheus metrics of the ingest service, in a registry of its own (one per app).

No metric is labelled by device: a label per device would grow without bound and say which
devices are active to whoever can scrape."""

from __future__ import annotations

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
)

from edge_agent.settings import create_private_file
from edge_agent.sync.wire import BatchResult

if TYPE_CHECKING:
    from edge_agent.host.ingest_store import IngestStore

_PREFIX = "edge_agent_ingest"


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
        self.devices = Gauge(f"{_PREFIX}_devices", "enrolled devices", registry=r)

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
            response = await call_next(request)
            route = request.scope.get("route")
            name = getattr(route, "path", "other")  # the template: no keys or ids as labels
            self.requests.labels(name, str(response.status_code)).inc()
            self.latency.labels(name).observe(time.perf_counter() - started)
            return response

    def render(self, store: IngestStore) -> Response:
        self.devices.set(len(store.devices()))
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def ensure_metrics_token(path: Path) -> str:
    """The token /metrics asks for, kept in `path` (0600): made on first use, then reused so
    a scraper configured once keeps working across restarts."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    if create_private_file(path, (token + "\n").encode()):
        return token
    path.chmod(0o600)
    return path.read_text().strip()
