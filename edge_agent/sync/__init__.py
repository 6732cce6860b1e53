"""Fleet sync, device side: push anonymized turns to the enrolled host (and, later, pull
adapters from it).

Nothing leaves the device unless it is enrolled *and* ``sync_enabled`` is set. What leaves
is ``redact(interaction)``: every free-text field through the device's anonymizer.

    enroll(url, token, pin=…) ─► Enrollment (credential + pinned certificate, 0600 file)
    SyncClient(log, anonymizer, enrollment).sync() ─► batches ─► POST /v1/batches
    SyncWorker(make_client, interval).start() / .stop()   (`edge-agent serve`)
"""

from __future__ import annotations

from edge_agent.sync.client import (
    Backoff,
    SyncClient,
    SyncOptions,
    SyncReport,
    SyncSource,
    device_anonymizer,
    open_client,
)
from edge_agent.sync.enrollment import Enrollment, enroll, fetch_certificate, pinned_context
from edge_agent.sync.redact import redact
from edge_agent.sync.worker import SyncTask, SyncWorker, worker_for

__all__ = [
    "Backoff",
    "Enrollment",
    "SyncClient",
    "SyncOptions",
    "SyncReport",
    "SyncSource",
    "SyncTask",
    "SyncWorker",
    "device_anonymizer",
    "enroll",
    "fetch_certificate",
    "open_client",
    "pinned_context",
    "redact",
    "worker_for",
]
