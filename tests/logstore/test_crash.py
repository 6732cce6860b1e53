"""Durability: SIGKILL at random moments, concurrent writer processes, a killed rotation."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from edge_agent.logstore import LogConfig, LogStore, verify
from tests.logstore_support import crash_loop, make_config, make_result

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


@pytest.fixture
def config(tmp_path: Path) -> LogConfig:
    return make_config(tmp_path, period_days=1)


def test_sigkill_at_random_moments_loses_no_acknowledged_record(config: LogConfig) -> None:
    # 200 kills of a writer mid-stream (about 25 ms each): in open, in key creation at a
    # period turn, mid-batch, mid-commit. scripts/bench/bench_logstore.py runs 1000.
    stats = crash_loop(config, runs=200, seed=int(os.environ.get("LOG_CRASH_SEED", "0")))
    assert stats.runs == 200
    assert stats.problems == []
    assert stats.missing == []
    assert stats.acked > 200  # the writers did get records acknowledged between kills
    with LogStore(config) as store:
        report = verify(store)
    assert report.clean and report.ok == stats.stored


def _fork(work: object) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()  # type: ignore[operator]
            code = 0
        finally:
            sys.stdout.flush()
            os._exit(code)
    return pid


def test_concurrent_writer_processes_corrupt_nothing(config: LogConfig) -> None:
    LogStore(config).close()  # created once; the racing processes open an existing log

    def writer(base: int) -> None:
        with LogStore(config) as store:
            for i in range(0, 150, 5):
                store.record_many((make_result(base + i + k), None) for k in range(5))

    def syncer() -> None:
        with LogStore(config) as store:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and store.status().records < 300:
                store.mark_synced(i.id for i in store.unsynced(limit=20))

    pids = [_fork(lambda: writer(0)), _fork(lambda: writer(10_000)), _fork(syncer)]
    codes = [os.waitpid(pid, 0)[1] for pid in pids]
    assert codes == [0, 0, 0]
    with LogStore(config) as store:
        assert store.integrity_check() == ["ok"]
        report = verify(store)
        assert report.clean and report.ok == 300


def test_sigkill_during_key_rotation_never_strands_the_log(config: LogConfig) -> None:
    with LogStore(config) as store:
        ids = store.record_many((make_result(i), None) for i in range(20))
    rng = random.Random(1)
    for _ in range(25):
        pid = _fork(lambda: _rotate_forever(config))
        time.sleep(rng.uniform(0.002, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with LogStore(config) as store:  # raises LogKeyError if a rotation lost the key
            assert [r["id"] for r in store.rows()] == ids
            assert verify(store).clean


def _rotate_forever(config: LogConfig) -> None:
    with LogStore(config) as store:
        while True:
            store.rotate_key()
