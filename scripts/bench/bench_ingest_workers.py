"""Ingest throughput by worker count: batches/s of `--records`-record batches, pushed over real
HTTPS by `--clients` concurrent devices (threads, one keep-alive connection each), to
`ingest.serve` with 1 and 2 workers, on SQLite (1 worker: its only setting outside tests) and
on PostgreSQL when initdb and psycopg are installed. The clients share the box's CPUs with
the server: report the CPU count beside the numbers.

    .venv/bin/python scripts/bench/bench_ingest_workers.py --batches 400
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the tests' ingest process and certificates

from edge_agent.sync import wire  # noqa: E402
from tests.host.ingest_process import IngestProcess, batch_body  # noqa: E402
from tests.sync_support import make_cert  # noqa: E402


def _push_all(host: IngestProcess, credential: str, args: argparse.Namespace) -> float:
    """Seconds to push `args.batches` batches with `args.clients` threads."""
    numbers = itertools.count()
    bodies = [batch_body(i * args.records, args.records) for i in range(args.batches)]
    errors: list[str] = []

    def device() -> None:
        with host.client(credential) as c:
            for i in iter(lambda: next(numbers), None):
                if i >= args.batches:
                    return
                key = f"bench-batch-{i:08d}"
                answer = c.post("/v1/batches", content=bodies[i], headers={wire.KEY_HEADER: key})
                if answer.status_code != 200:
                    errors.append(f"{answer.status_code} {answer.text[:100]}")

    threads = [threading.Thread(target=device) for _ in range(args.clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} batches failed, first: {errors[0]}")
    return time.perf_counter() - started


def _run(store: str, workers: int, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    with IngestProcess(store, make_cert(folder), workers=workers) as host:
        credential = host.enroll().credential
        seconds = _push_all(host, credential, args)
    engine = "postgresql" if "://" in store else "sqlite"
    return {
        "store": engine,
        "workers": workers,
        "batches": args.batches,
        "records_per_batch": args.records,
        "batches_per_s": round(args.batches / seconds, 1),
        "records_per_s": round(args.batches * args.records / seconds),
    }


def _postgres() -> Any:
    try:
        import psycopg  # noqa: F401

        from tests.pg_support import PgServer, bindir
    except ImportError:
        return None
    found = bindir()
    return PgServer(found).start() if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            folder = Path(tmp) / f"sqlite-{workers}"
            folder.mkdir()
            rows.append(_run(str(folder / "ingest.db"), workers, folder, args))
        pg = _postgres()
        if pg is not None:
            try:
                for workers in (1, 2):
                    folder = Path(tmp) / f"pg-{workers}"
                    folder.mkdir()
                    rows.append(_run(pg.database(), workers, folder, args))
            finally:
                pg.stop()
    print(json.dumps({"cpus": os.cpu_count(), "clients": args.clients, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
