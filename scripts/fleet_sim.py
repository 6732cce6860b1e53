"""A fleet pushing to the host (issue 17): N simulated devices enroll for real (one-time tokens
from the store, the host's self-signed certificate pinned) and push M records each, in the
sync client's own batches with its idempotency keys and retry rules (asyncio + httpx over
HTTPS), through the fault proxy (connections dropped or cut mid-request or mid-answer, the
same request sent twice at once) to `edge-agent host serve --workers K` over PostgreSQL; then
the same against SQLite with one worker, side by side. A device also sends some acknowledged
batches again with the same key (a crash before it marked them), and the host must replay.

Checked against what each device was acknowledged: lost records (acknowledged, not in the
store) and duplicated ones (a device's record stored more than once) must both be 0, and no
worker may answer a 5xx (counted on the workers' /metrics, so also those the proxy swallowed).
Prints a table and writes it to OUT.md and OUT.json; exits 1 when a check fails.

    nice -n 19 .venv/bin/python scripts/fleet_sim.py --devices 1000 --records 100 --workers 2

Batch latency: a batch's first send to its acknowledgement, retries and backoff included.
Everything shares this machine's CPUs: the devices (one process), the proxy (one process),
the workers and PostgreSQL; the output states the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' fault proxy, PostgreSQL helper and turns
sys.path.insert(0, str(ROOT / "scripts"))

from fleet_sim_device import Batch, Pusher, Tally, device_records, enroll_all, prepare  # noqa: E402
from fleet_sim_stack import (  # noqa: E402
    CpuClock,
    HostProcess,
    ProxyProcess,
    check_store,
    postmaster_pid,
    start_postgres,
)

from edge_agent.host.tls import self_signed  # noqa: E402
from edge_agent.sync import Backoff  # noqa: E402
from tests.sync_support import Cert  # noqa: E402

DEFAULT_OUT = ROOT / "scripts" / "bench" / "results" / "fleet_sim"
# The fault rate is split evenly over these (tests/sync_support.py FaultProxy): disconnects
# before or in the middle of the request, an answer lost or cut after the host stored the
# batch, and the request sent to the host twice at once. No injected 5xx: every 5xx counted
# is a worker's.
FAULTS = ("drop", "cut_request", "lost_answer", "cut_answer", "duplicate")
COLUMNS = (
    ("store", "store"), ("workers", "workers"), ("devices", "devices"),
    ("records", "records"), ("records/s", "records_per_s"), ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"), ("5xx", "errors_5xx"), ("lost", "lost"),
    ("duplicated", "duplicated"), ("client retries", "retries"),
)  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--records", type=int, default=100, help="records per device")
    p.add_argument("--workers", type=int, default=2, help="ingest workers over PostgreSQL")
    p.add_argument(
        "--batch-size",
        type=int,
        default=200,
        help="records per batch at most (the device's default, sync_batch_records)",
    )
    p.add_argument(
        "--fault-rate",
        type=float,
        default=0.1,
        help="share of requests the proxy breaks; also the share of acknowledged "
        "batches a device sends again; 0: no proxy",
    )
    p.add_argument(
        "--stores",
        default="postgresql,sqlite",
        help="postgresql: --workers, then 1 worker; sqlite: 1 worker",
    )
    p.add_argument(
        "--no-single",
        action="store_true",
        help="skip PostgreSQL with 1 worker (the 2-workers-vs-1 comparison)",
    )
    p.add_argument("--concurrency", type=int, default=64, help="devices pushing at once")
    p.add_argument(
        "--backoff-base",
        type=float,
        default=0.2,
        help="seconds: the device's full-jitter backoff, scaled down from its 1 s",
    )
    p.add_argument("--backoff-cap", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="writes OUT.md and OUT.json")
    p.add_argument(
        "--train",
        action="store_true",
        help="then `host train --all --ray local` on the PostgreSQL store's data",
    )
    p.add_argument("--train-args", default="", help="more `host train` options (--model …)")
    args = p.parse_args(argv)
    if min(args.devices, args.records, args.workers, args.batch_size, args.concurrency) < 1:
        p.error("--devices, --records, --workers, --batch-size and --concurrency must be >= 1")
    if not 0 <= args.fault_rate < 1:
        p.error("--fault-rate must be in [0, 1)")
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not args.stores or set(args.stores) - {"postgresql", "sqlite"}:
        p.error("--stores takes postgresql, sqlite or both")
    return args


def plan(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(store, workers) per run, in order: PostgreSQL with K workers, with 1, then SQLite."""
    runs = []
    if "postgresql" in args.stores:
        runs.append(("postgresql", args.workers))
        if args.workers > 1 and not args.no_single:
            runs.append(("postgresql", 1))
    if "sqlite" in args.stores:
        runs.append(("sqlite", 1))
    return runs


def fault_weights(rate: float) -> dict[str, float]:
    return {"pass": 1.0 - rate, **{f: rate / len(FAULTS) for f in FAULTS}}


def cpu_budget(args: argparse.Namespace) -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpus} CPU cores, shared by the {args.devices} simulated devices (one asyncio "
        f"process), the fault proxy (one process), the ingest workers and PostgreSQL; "
        f"nice {os.nice(0)}"
    )


class Fleet:
    """One simulation: the options, the temporary folder, the host's certificate, the
    PostgreSQL server, and the devices' batches, made once (after the first enrollment: the
    host's limits) and sent again in every run: the same bytes and keys against every store."""

    def __init__(self, args: argparse.Namespace, root: Path, cert: Cert, pg: Any) -> None:
        self.args, self.root, self.cert, self.pg = args, root, cert, pg
        self.batches: list[list[Batch]] = []

    def prepared(self, enrollments: Sequence[Any]) -> list[list[Batch]]:
        if not self.batches:
            started = time.perf_counter()
            self.batches = [
                prepare(e, device_records(i, self.args.records), self.args.batch_size)
                for i, e in enumerate(enrollments)
            ]
            count = sum(len(b) for b in self.batches)
            took = time.perf_counter() - started
            print(f"  {count} batches prepared in {took:.1f} s", flush=True)
        return self.batches


async def push_all(pusher: Pusher, enrollments: Sequence[Any], batches: Sequence[Any], at_once: int
                   ) -> None:  # fmt: skip
    gate = asyncio.Semaphore(at_once)

    async def device(enrollment: Any, mine: Sequence[Batch]) -> None:
        async with gate:
            await pusher.device(enrollment, mine)

    await asyncio.gather(*(device(e, b) for e, b in zip(enrollments, batches, strict=True)))


def run_one(fleet: Fleet, store: str, workers: int) -> dict[str, Any]:
    args, cert = fleet.args, fleet.cert
    print(f"{store}, {workers} worker(s): starting", flush=True)
    url = fleet.pg.database() if store == "postgresql" else None
    host = HostProcess(fleet.root / f"{store}-{workers}", cert, workers, url).start()
    proxy = None
    try:
        enrollments = asyncio.run(enroll_all(host.url, host.tokens(args.devices), cert.sha256))
        print(f"  {len(enrollments)} devices enrolled", flush=True)
        batches = fleet.prepared(enrollments)
        if args.fault_rate > 0:
            proxy = ProxyProcess(host.port, cert, fault_weights(args.fault_rate))
        backoff = Backoff(args.backoff_base, args.backoff_cap)
        pusher = Pusher(proxy.url if proxy else host.url, Tally(), backoff, args.fault_rate)
        pids = {"devices": os.getpid(), "proxy": proxy.proc.pid if proxy else None,
                "workers": host.proc.pid if host.proc else None,
                "postgresql": postmaster_pid(fleet.pg) if url else None}  # fmt: skip
        load = os.getloadavg()[0]  # other work on the box: the numbers are shared with it
        cpu, started = CpuClock(pids, alone=["devices"]), time.perf_counter()
        asyncio.run(push_all(pusher, enrollments, batches, args.concurrency))
        seconds = time.perf_counter() - started
        cpu_s = cpu.elapsed()
        host_5xx = host.errors_5xx()
    finally:
        faults = proxy.stop() if proxy else {}
        host.stop()
    check = check_store(host.target, pusher.acknowledged)
    acknowledged = sum(len(ids) for ids in pusher.acknowledged.values())
    row = _row(args, pusher.tally, store=store, workers=workers, seconds=seconds,
               host_5xx=host_5xx, acknowledged=acknowledged)  # fmt: skip
    row.update(lost=check.lost, duplicated=check.duplicated, stored=check.stored,
               unacknowledged=check.unacknowledged, faults=faults)  # fmt: skip
    row["cpu_s"], row["load_before"] = cpu_s, round(load, 1)
    row["home"], row["database_url"] = str(host.home), url
    print(f"  {_line(row)}", flush=True)
    return row


def _row(args: argparse.Namespace, tally: Tally, *, store: str, workers: int, seconds: float,
         host_5xx: int, acknowledged: int) -> dict[str, Any]:  # fmt: skip
    cuts = statistics.quantiles(tally.latencies, n=100) if len(tally.latencies) > 1 else [0.0] * 99
    return {
        "store": store,
        "workers": workers,
        "devices": args.devices,
        "records": acknowledged,
        "seconds": round(seconds, 2),
        "records_per_s": round(acknowledged / seconds),
        "batches": len(tally.latencies),  # acknowledged, besides the resends
        "p50_ms": round(statistics.median(tally.latencies or [0.0]) * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "errors_5xx": max(host_5xx, tally.errors_5xx),
        "retries": tally.retries,
        "resent": tally.resent,
        "replays_wrong": tally.replays_wrong,
        "gave_up_batches": sum(tally.failed.values()),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
    }


def _line(row: dict[str, Any]) -> str:
    return ", ".join(f"{title} {row[key]}" for title, key in COLUMNS[3:])


def failures(row: dict[str, Any]) -> list[str]:
    checks = ("lost", "duplicated", "errors_5xx", "replays_wrong", "gave_up_batches")
    return [f"{row['store']}/{row['workers']}: {name} {row[name]}" for name in checks if row[name]]


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = "| " + " | ".join(t for t, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = ["| " + " | ".join(str(r[k]) for _, k in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *lines])


def cpu_table(rows: Sequence[dict[str, Any]]) -> str:
    """Where the CPU went while the devices pushed: seconds per part, beside the wall time."""
    parts = ("devices", "proxy", "workers", "postgresql")
    head = "| store | workers | load avg before | wall s | "
    head += " | ".join(f"CPU s {p}" for p in parts) + " |"
    rule = "|" + "|".join("---" for _ in range(4 + len(parts))) + "|"
    lines = [
        f"| {r['store']} | {r['workers']} | {r['load_before']} | {r['seconds']} | "
        + " | ".join(str(r["cpu_s"].get(p, "-")) for p in parts)
        + " |"
        for r in rows
    ]
    return "\n".join([head, rule, *lines])


def ratios(rows: Sequence[dict[str, Any]], workers: int) -> list[str]:
    """The issue's throughput targets, as measured."""
    speed = {(r["store"], r["workers"]): r["records_per_s"] for r in rows}
    lines = []
    many, one = speed.get(("postgresql", workers)), speed.get(("postgresql", 1))
    if many and one and workers > 1:
        lines.append(f"PostgreSQL {workers} workers / 1 worker: {many / one:.2f}x (target >= 1.5x)")
    lite = speed.get(("sqlite", 1))
    if many and lite:
        lines.append(f"PostgreSQL {workers} workers / SQLite 1 worker: {many / lite:.2f}x "
                     "(target >= 1x)")  # fmt: skip
    return lines


def train(rows: Sequence[dict[str, Any]], args: argparse.Namespace) -> str:
    """`host train --all --ray local` over the first PostgreSQL run's store."""
    pg = next((r for r in rows if r["store"] == "postgresql"), None)
    if pg is None:
        return "training skipped: no PostgreSQL run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    env.update(EDGE_AGENT_HOME=pg["home"], EDGE_AGENT_HOST_DATABASE_URL=pg["database_url"])
    env.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local cluster: no token in ~/.ray
    argv = [sys.executable, "-m", "edge_agent", "host", "train", "--all", "--ray", "local",
            "--out", str(Path(pg["home"]) / "flywheel"), *shlex.split(args.train_args)]  # fmt: skip
    help_text = subprocess.run(
        [*argv[:5], "--help"], check=False, capture_output=True, text=True, env=env, cwd=ROOT
    )
    if "--ray" not in help_text.stdout:
        return "training skipped: this host has no `host train --all --ray` yet"
    started = time.perf_counter()
    done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, cwd=ROOT)
    tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
    took = time.perf_counter() - started
    return f"host train --all --ray local: exit {done.returncode} in {took:.0f} s\n" + "\n".join(
        tail
    )


def write(out: Path, args: argparse.Namespace, rows: list[dict[str, Any]], notes: list[str]
          ) -> str:  # fmt: skip
    setup = (
        f"{args.devices} devices x {args.records} records, batches of <= {args.batch_size}, "
        f"{args.concurrency} devices at once, fault rate {args.fault_rate} "
        f"({', '.join(FAULTS)}; as many acknowledged batches re-sent with their key)"
    )
    text = "\n\n".join(["# Fleet simulator (scripts/fleet_sim.py)", setup,
                        f"CPU budget: {cpu_budget(args)}", table(rows),
                        "While the devices pushed:", cpu_table(rows), *notes])  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + ".md").write_text(text + "\n")
    public = [{k: v for k, v in r.items() if k not in ("home", "database_url")} for r in rows]
    summary = {"setup": setup, "cpu_budget": cpu_budget(args), "rows": public, "notes": notes}
    out.with_name(out.name + ".json").write_text(json.dumps(summary, indent=2) + "\n")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs = plan(args)
    with tempfile.TemporaryDirectory(prefix="fleet-sim-") as tmp:
        root = Path(tmp)
        files = root / "host.crt", root / "host.key"
        cert = Cert(*files, self_signed(*files, names=["127.0.0.1"]))
        pg = start_postgres() if any(s == "postgresql" for s, _ in runs) else None
        if pg is None and any(s == "postgresql" for s, _ in runs):
            print("PostgreSQL (initdb, psycopg) is not installed: postgresql runs skipped")
            runs = [r for r in runs if r[0] != "postgresql"]
        try:
            fleet = Fleet(args, root, cert, pg)
            rows = [run_one(fleet, store, workers) for store, workers in runs]
            notes = ratios(rows, args.workers)
            notes += [train(rows, args)] if args.train else []
        finally:
            if pg is not None:
                pg.stop()
    bad = [f for r in rows for f in failures(r)]
    notes += [f"FAILED: {'; '.join(bad)}"] if bad else ["0 lost, 0 duplicated, 0 5xx: passed"]
    print("\n" + write(args.out, args, rows, notes))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
