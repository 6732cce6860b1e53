"""Several ingest workers on one port (`host serve --workers N`): each worker answers for all
of them on /metrics, and a worker killed mid-batch acknowledges nothing it did not store.
On SQLite the workers are a stand-in: the CLI refuses more than one worker there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.host.ingest_store import IngestStore
from edge_agent.sync import wire
from tests.host.ingest_process import (
    IngestProcess,
    SlowPost,
    batch_body,
    in_flight,
    stopped,
    wait_in_flight,
)
from tests.sync_support import make_cert

pytestmark = pytest.mark.integration

STORED = ("edge_agent_ingest_batches_total", (("outcome", "stored"),))
RECORDS = ("edge_agent_ingest_records_total", (("outcome", "stored"),))
REQUESTS = "edge_agent_ingest_requests_total"


def _push(host: IngestProcess, credential: str, first: int, count: int = 5) -> None:
    body = batch_body(first, count)
    with host.client(credential) as c:  # a new connection: whichever worker accepts it
        answer = c.post(
            "/v1/batches", content=body, headers={wire.KEY_HEADER: f"batch-{first:010d}"}
        )
    assert answer.status_code == 200, answer.text


def test_metrics_add_up_across_workers(tmp_path: Path, store_url: str) -> None:
    """Batches go to one worker while the other is paused, then the other way round; every
    scrape, whichever worker answers it, counts all of them."""
    with IngestProcess(store_url, make_cert(tmp_path), workers=2) as host:
        credential = host.enroll().credential
        first, second = host.worker_pids()
        with stopped(second):
            for i in range(3):
                _push(host, credential, i * 5)
            alone = host.scrape()  # `first` alone answers: it counts its own
        with stopped(first):
            for i in range(3, 7):
                _push(host, credential, i * 5)
            seen_by_second = host.scrape()
        with stopped(second):
            seen_by_first = host.scrape()
    assert alone[STORED] == 3
    for samples in (seen_by_second, seen_by_first):
        assert samples[STORED] == 7 and samples[RECORDS] == 35
        route = (REQUESTS, (("route", "/v1/batches"), ("status", "200")))
        assert samples[route] == 7
        assert samples[("edge_agent_ingest_devices", ())] == 1


def test_a_worker_killed_mid_batch_acknowledges_nothing(tmp_path: Path, store_url: str) -> None:
    """SIGKILL with a batch in flight on each worker: no answer reaches the device, uvicorn
    starts new workers, and the retry with the same key stores the batch once."""
    with IngestProcess(store_url, make_cert(tmp_path), workers=2) as host:
        enrollment = host.enroll()
        body = batch_body(0, 20)
        posts = [
            SlowPost(host, enrollment.credential, f"slow-batch-key-{i:04d}", body) for i in range(2)
        ]
        wait_in_flight(host, 2)
        killed = host.worker_pids()
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        assert [p.finish() for p in posts] == [None, None]
        host.wait_for_log("Application startup complete", count=4)  # two new workers
        with host.client(enrollment.credential) as c:
            for post in posts:
                retry = c.post("/v1/batches", content=body, headers={wire.KEY_HEADER: post.key})
                assert retry.status_code == 200, retry.text
        assert not set(killed) & set(host.worker_pids())
        assert in_flight(host.scrape()) == 1  # the scrape: the killed workers' two are gone
    store = IngestStore(store_url)
    try:
        assert len(store.records(enrollment.device_id)) == 20
        results = [store.batch_result(enrollment.device_id, p.key) for p in posts]
        assert sorted(r.stored for r in results if r is not None) == [0, 20]
    finally:
        store.close()


def test_cli_refuses_several_workers_on_sqlite(edge_home: Path) -> None:
    argv = [sys.executable, "-m", "edge_agent", "host", "serve", "--workers", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: --workers 2 needs a PostgreSQL store (a postgresql:// database URL); "
        "SQLite, the default, serves one worker"
    ]
    assert not (edge_home / "data" / "host").exists()  # refused before making anything
