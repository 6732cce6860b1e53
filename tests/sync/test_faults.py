"""10,000 records through a fault-injecting proxy and a host that keeps restarting: every
record arrives once, none is lost, none is stored twice, none is altered."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import pytest

from edge_agent.errors import HostUnreachableError
from edge_agent.sync import Backoff, SyncClient, SyncOptions, SyncReport, enroll, redact, wire
from tests.sync_support import (
    FaultProxy,
    HostServer,
    MaskAt,
    MemorySource,
    make_cert,
    make_interaction,
    token,
)

pytestmark = pytest.mark.integration

N = 10_000
WEIGHTS = {
    "pass": 0.42,
    "drop": 0.06,  # the connection closes before anything is forwarded
    "cut_request": 0.06,  # the host gets half the body, then the connection is cut
    "lost_answer": 0.08,  # the host stored the batch; the device hears nothing
    "cut_answer": 0.06,  # ... or half an answer
    "duplicate": 0.08,  # the request reaches the host twice, at the same time
    "error_503": 0.06,
    "error_after": 0.06,  # the host stored it, the device gets a 502
    "delay": 0.10,
    "stall": 0.02,  # no answer within the client's timeout
}


class Restarter(threading.Thread):
    """Restarts the host (same port, same database) every `every_s` seconds."""

    def __init__(self, host: HostServer, every_s: float) -> None:
        super().__init__(daemon=True)
        self.host, self.every_s = host, every_s
        self.done = threading.Event()
        self.restarts = 0

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            self.host.restart()
            self.restarts += 1


def test_ten_thousand_records_arrive_exactly_once(tmp_path: Path) -> None:
    started = time.monotonic()
    cert = make_cert(tmp_path)
    host = HostServer(tmp_path / "host", cert).start()
    enrollment = enroll(host.url, token(host), pin=cert.sha256)
    proxy = FaultProxy(host.port, cert, WEIGHTS).start()
    source = MemorySource(make_interaction(i) for i in range(N))
    anonymizer = MaskAt()  # the anonymizer has its own tests; this one is about transport
    options = SyncOptions(
        batch_records=100, timeout_s=1.0, max_attempts=40, backoff=Backoff(base_s=0.005, cap_s=0.1)
    )
    restarter = Restarter(host, every_s=1.5)
    restarter.start()
    totals, runs = SyncReport(), 0
    try:
        with SyncClient(source, anonymizer, enrollment, options, base_url=proxy.url) as client:
            while len(source.synced) < N and runs < 5:
                runs += 1
                with contextlib.suppress(HostUnreachableError):  # the next run picks it up
                    _add(totals, client.sync())
    finally:
        restarter.done.set()
        restarter.join()
        proxy.stop()

    rows = host.store.records()
    ids = [r["id"] for r in rows]
    stored_per_batch = [
        json.loads(r[0])["stored"] for r in host.store.conn.execute("SELECT result FROM batches")
    ]
    print(
        f"\n{N} records, {runs} run(s), {time.monotonic() - started:.1f} s: "
        f"{len(ids)} on the host, {len(set(ids))} distinct; device retries {totals.retries}, "
        f"batches the host answered again {totals.replayed}; host restarts "
        f"{restarter.restarts}; proxy faults {dict(proxy.counts)}"
    )
    try:
        assert len(ids) == len(set(ids)) == N  # 0 lost, 0 duplicated
        assert sum(stored_per_batch) == N  # every record counted as stored exactly once
        assert source.synced == set(source.items) and max(source.marks.values()) == 1
        for row in rows:  # nothing altered by a cut or a duplicate: the host has what was sent
            sent = wire.encode_record(redact(source.items[row["id"]], anonymizer))
            assert json.loads(row["body"]) == json.loads(sent)
        assert all(proxy.counts[f] > 0 for f in WEIGHTS) and restarter.restarts >= 2
        assert totals.replayed > 0  # lost answers really happened and were answered again
    finally:
        host.stop()


def _add(total: SyncReport, report: SyncReport) -> None:
    total.acknowledged += report.acknowledged
    total.duplicates += report.duplicates
    total.retries += report.retries
    total.replayed += report.replayed
