"""Stopping the ingest service (SIGTERM, as systemd does): it stops accepting, finishes the
batches in flight, and no device ever gets a 2xx for a batch that is not stored."""

from __future__ import annotations

import itertools
import signal
import threading
from pathlib import Path

import httpx
import pytest

from edge_agent.host.ingest_store import IngestStore
from edge_agent.sync import wire
from tests.host.ingest_process import IngestProcess, SlowPost, batch_body, wait_in_flight
from tests.sync_support import make_cert

pytestmark = pytest.mark.integration

RECORDS = 20
# One worker ends by the signal it stopped for (uvicorn raises it again); a supervisor with 0.
STOPPED = (0, -signal.SIGTERM)


class Pusher(threading.Thread):
    """A device pushing batch after batch on one connection until the host goes away;
    keeps the keys that were acknowledged (2xx)."""

    def __init__(self, host: IngestProcess, credential: str, numbers: itertools.count[int]):
        super().__init__(daemon=True)
        self.host, self.credential, self.numbers = host, credential, numbers
        self.acknowledged: dict[str, int] = {}  # key -> the batch's first record number

    def run(self) -> None:
        with self.host.client(self.credential) as c:
            while True:
                first = next(self.numbers) * RECORDS
                key = f"pushed-batch-{first:08d}"
                try:
                    answer = c.post(
                        "/v1/batches",
                        content=batch_body(first, RECORDS),
                        headers={wire.KEY_HEADER: key},
                    )
                except httpx.TransportError:
                    return
                if not answer.is_success:
                    return
                self.acknowledged[key] = first


def _stored(store_url: str, device_id: str, keys: list[str]) -> dict[str, int]:
    """Key -> records stored by that batch, for the keys the store has."""
    store = IngestStore(store_url)
    try:
        results = {key: store.batch_result(device_id, key) for key in keys}
        assert len(store.records(device_id)) == sum(r.stored for r in results.values() if r)
        return {key: r.stored for key, r in results.items() if r is not None}
    finally:
        store.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_batches_in_flight(tmp_path: Path, store_url: str, workers: int) -> None:
    with IngestProcess(store_url, make_cert(tmp_path), workers=workers) as host:
        enrollment = host.enroll()
        numbers = itertools.count(100)
        slow = [
            SlowPost(host, enrollment.credential, f"slow-batch-{i:06d}", batch_body(i * 100, 20))
            for i in range(3)
        ]
        pushers = [Pusher(host, enrollment.credential, numbers) for _ in range(2)]
        for pusher in pushers:
            pusher.start()
        wait_in_flight(host, 3)
        host.proc.send_signal(signal.SIGTERM)
        host.wait_for_log("Shutting down", count=workers)
        assert [post.finish() for post in slow] == [200, 200, 200]
        assert host.proc.wait(timeout=60) in STOPPED
        for pusher in pushers:
            pusher.join(timeout=60)
    acknowledged = {k: RECORDS for p in pushers for k in p.acknowledged}
    acknowledged |= {post.key: 20 for post in slow}
    stored = _stored(store_url, enrollment.device_id, list(acknowledged))
    assert stored == acknowledged  # every acknowledged batch, with all its records


def test_a_batch_past_the_graceful_timeout_is_dropped_unacknowledged(
    tmp_path: Path, store_url: str
) -> None:
    with IngestProcess(store_url, make_cert(tmp_path), graceful_timeout_s=0.5) as host:
        enrollment = host.enroll()
        post = SlowPost(host, enrollment.credential, "never-finished-01", batch_body(0, 20))
        wait_in_flight(host, 1)
        host.proc.send_signal(signal.SIGTERM)
        assert host.proc.wait(timeout=60) in STOPPED
        assert post.finish() is None
    assert _stored(store_url, enrollment.device_id, [post.key]) == {}
