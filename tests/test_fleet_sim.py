"""scripts/fleet_sim.py: a small fleet through the fault proxy to 2 ingest workers on a real
PostgreSQL and to 1 on SQLite (a subprocess, as an operator runs it), and its store check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.host.ingest_store import Incoming, IngestStore, Quota
from tests.pg_support import bindir

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "fleet_sim.py"
sys.path.insert(0, str(ROOT / "scripts"))

from fleet_sim_stack import check_store  # noqa: E402

pytestmark = pytest.mark.integration


def test_a_small_fleet_loses_and_duplicates_nothing_on_either_store(tmp_path: Path) -> None:
    pytest.importorskip("psycopg", reason="the fleet extra (psycopg) is not installed")
    if bindir() is None:
        pytest.skip("PostgreSQL's initdb is not installed: apt-get install postgresql")
    out = tmp_path / "fleet"
    argv = [sys.executable, str(SCRIPT), "--devices", "20", "--records", "20", "--workers",
            "2", "--batch-size", "8", "--fault-rate", "0.4", "--concurrency", "8",
            "--backoff-base", "0.01", "--out", str(out)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["store"], r["workers"]) for r in rows] == [
        ("postgresql", 2),
        ("postgresql", 1),
        ("sqlite", 1),
    ]
    for row in rows:
        assert (row["lost"], row["duplicated"], row["errors_5xx"]) == (0, 0, 0), row
        assert row["records"] == row["stored"] == 400, row
        assert row["batches"] == 60 and row["retries"] > 0, row  # 3 batches a device
        assert sum(n for f, n in row["faults"].items() if f != "pass") > 0, row
    table = out.with_suffix(".md").read_text()
    assert "| store | workers | devices | records | records/s | p50 ms | p99 ms | 5xx |" in table
    assert "CPU budget: " in table and "0 lost, 0 duplicated, 0 5xx: passed" in table


def _batch(device_id: str, ids: list[str]) -> Incoming:
    records = [(i, 1.0, json.dumps({"id": i})) for i in ids]
    return Incoming(device_id, "k" * 20 + device_id, "0" * 64, 100, records)


def test_the_store_check_counts_what_was_acknowledged_but_is_missing(tmp_path: Path) -> None:
    store = IngestStore(tmp_path / "ingest.db")
    store.ingest(_batch("dev_a", ["r1", "r2"]), Quota())
    store.ingest(_batch("dev_b", ["r1"]), Quota())
    store.close()
    acknowledged = {"dev_a": {"r1", "r2", "r3"}, "dev_c": {"r1"}}  # r3 and dev_c's r1: lost
    check = check_store(str(tmp_path / "ingest.db"), acknowledged)
    assert (check.stored, check.lost, check.duplicated, check.unacknowledged) == (3, 2, 0, 1)
