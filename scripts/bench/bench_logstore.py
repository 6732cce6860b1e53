"""Log benchmark: sealed batched writes against plaintext inserts of the same records.

Measures, in one run, on the same records, schema and pragmas (WAL, synchronous=FULL):
  * records/s for LogStore.record_many in batches (goal >= 50k/s);
  * records/s for plaintext sqlite-utils ``insert_all`` and for plain ``executemany`` of the
    same rows (the body JSON unsealed), and the sealed/plaintext time ratio (goal <= 1.3x);
  * single-record commit latency (LogStore.record: one transaction and fsync each);
  * the SIGKILL crash loop (tests/logstore/test_crash.py runs 200; this runs 1000).

Repetitions are interleaved and medians reported; the machine is shared, so expect noise.

    .venv/bin/python scripts/bench/bench_logstore.py [--records 20000] [--batch 1000]
        [--crash-runs 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_agent.backends.base import Message  # noqa: E402
from edge_agent.logstore import LogStore, seal  # noqa: E402
from edge_agent.logstore.migrations import migrations  # noqa: E402
from edge_agent.types import AgentResult  # noqa: E402
from tests.logstore_support import crash_loop, make_config, make_messages, make_result  # noqa: E402

Item = tuple[AgentResult, list[Message]]


def records(n: int) -> list[Item]:
    made = [make_result(i) for i in range(n)]
    return [(r, make_messages(r)) for r in made]


def _batches(items: Sequence[Item], size: int) -> list[Sequence[Item]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def sealed_seconds(items: Sequence[Item], batch: int, root: Path) -> float:
    with LogStore(make_config(root)) as store:
        t0 = time.perf_counter()
        for chunk in _batches(items, batch):
            store.record_many(chunk)
        return time.perf_counter() - t0


def _plain_db(root: Path) -> Any:
    from sqlite_utils import Database

    root.mkdir(parents=True)
    conn = sqlite3.connect(root / "plain.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    db = Database(conn, execute_plugins=False)
    migrations.apply(db)  # the same table and indexes
    return db


def _plain_row(item: Item, ts: float) -> tuple[Any, ...]:
    result, messages = item
    period = "2025-06-12/7d"
    body = seal.encode_body(ts, period, result, messages)
    return (result.id, "k_plain", *seal.metadata(ts, period, result, len(body)), 1, body)


def plain_utils_seconds(items: Sequence[Item], batch: int, root: Path) -> float:
    db = _plain_db(root)
    table = db.table("interactions")
    t0 = time.perf_counter()
    for chunk in _batches(items, batch):
        now = time.time()
        rows = [dict(zip(seal.INSERT_COLUMNS, _plain_row(i, now), strict=True)) for i in chunk]
        with db.atomic():
            table.insert_all(rows, batch_size=batch)
    return time.perf_counter() - t0


def plain_executemany_seconds(items: Sequence[Item], batch: int, root: Path) -> float:
    db = _plain_db(root)
    sql = "INSERT INTO interactions ({}) VALUES ({})".format(
        ", ".join(seal.INSERT_COLUMNS), ", ".join("?" * len(seal.INSERT_COLUMNS))
    )
    t0 = time.perf_counter()
    for chunk in _batches(items, batch):
        now = time.time()
        rows = [_plain_row(i, now) for i in chunk]
        with db.atomic():
            db.conn.executemany(sql, rows)
    return time.perf_counter() - t0


def single_commit_ms(root: Path, n: int) -> dict[str, float]:
    items = records(n)
    times = []
    with LogStore(make_config(root)) as store:
        for result, messages in items:
            t0 = time.perf_counter()
            store.record(result, messages)
            times.append((time.perf_counter() - t0) * 1000)
    q = statistics.quantiles(times, n=100)
    return {"p50_ms": q[49], "p95_ms": q[94], "p99_ms": q[98], "n": n}


def throughput(n: int, batch: int, reps: int, tmp: Path) -> dict[str, Any]:
    items = records(n)
    runs: dict[str, Callable[[Sequence[Item], int, Path], float]] = {
        "sealed": sealed_seconds,
        "plain_sqlite_utils": plain_utils_seconds,
        "plain_executemany": plain_executemany_seconds,
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(reps):  # interleaved, so drift in machine load hits all alike
        for name, run in runs.items():
            seconds[name].append(run(items, batch, tmp / f"{name}-{rep}"))
    med = {name: statistics.median(s) for name, s in seconds.items()}
    return {
        "records": n,
        "batch": batch,
        "reps": reps,
        "records_per_s": {name: n / s for name, s in med.items()},
        "ratio_vs_sqlite_utils": med["sealed"] / med["plain_sqlite_utils"],
        "ratio_vs_executemany": med["sealed"] / med["plain_executemany"],
    }


def crash(runs: int, tmp: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    stats = crash_loop(make_config(tmp / "crash", period_days=1), runs, seed=1000)
    return {
        "runs": stats.runs,
        "acked": stats.acked,
        "stored": stats.stored,
        "missing_acked": len(stats.missing),
        "integrity_problems": len(stats.problems),
        "mean_run_ms": (time.perf_counter() - t0) * 1000 / max(runs, 1),
    }


def table(result: dict[str, Any]) -> str:
    t, s = result["throughput"], result["single_commit"]
    rps = t["records_per_s"]
    lines = [
        f"batched writes ({t['records']} records, batches of {t['batch']}, median of {t['reps']})",
        f"  sealed LogStore.record_many     {rps['sealed']:>10,.0f} rec/s   (goal >= 50,000)",
        f"  plaintext sqlite-utils insert   {rps['plain_sqlite_utils']:>10,.0f} rec/s",
        f"  plaintext executemany           {rps['plain_executemany']:>10,.0f} rec/s",
        f"  sealed / sqlite-utils time      {t['ratio_vs_sqlite_utils']:>10.2f} x  (goal <= 1.3)",
        f"  sealed / executemany time       {t['ratio_vs_executemany']:>10.2f} x",
        f"single-record commit (n={s['n']})  p50 {s['p50_ms']:.2f} ms  p95 {s['p95_ms']:.2f} ms  "
        f"p99 {s['p99_ms']:.2f} ms",
    ]
    if "crash" in result:
        c = result["crash"]
        lines.append(
            f"crash loop: {c['runs']} SIGKILLs, {c['acked']} acked, {c['missing_acked']} missing, "
            f"{c['integrity_problems']} integrity problems, {c['mean_run_ms']:.0f} ms/run"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--single", type=int, default=300, help="single-commit samples")
    parser.add_argument("--crash-runs", type=int, default=1000, help="0 skips the crash loop")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-logstore-") as name:
        tmp = Path(name)
        result: dict[str, Any] = {
            "throughput": throughput(args.records, args.batch, args.reps, tmp),
            "single_commit": single_commit_ms(tmp / "single", args.single),
        }
        if args.crash_runs:
            result["crash"] = crash(args.crash_runs, tmp)
    print(json.dumps(result, indent=2) if args.json else table(result))
    crash_result = result.get("crash", {})
    if crash_result.get("missing_acked") or crash_result.get("integrity_problems"):
        sys.exit(1)


if __name__ == "__main__":
    main()
