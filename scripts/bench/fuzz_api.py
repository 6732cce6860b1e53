"""The API fuzz suites with a larger budget: `edge-agent serve` (tests/server/test_fuzz_api.py)
and `edge-agent host serve` (tests/host/test_fuzz_api.py), the same apps, data and checks as in
CI, but ``--examples`` cases per operation and generation mode, and every failure recorded
rather than the first one shrunk. Prints, per suite and operation, the cases run, their
statuses and how many failed, then each distinct failure with a request that reproduces it.

    .venv/bin/python scripts/bench/fuzz_api.py [--examples 500] [--api device|host|both] [--json]

Exit status 1 when any case failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests import fuzz_support  # noqa: E402  (after the path: the repo root, not installed)

SUITES = {"device": "tests/server/test_fuzz_api.py", "host": "tests/host/test_fuzz_api.py"}


def run(examples: int, apis: list[str]) -> tuple[int, float]:
    """Run the suites in this process (they read the budget when pytest imports them)."""
    fuzz_support.BUDGET.examples = examples
    fuzz_support.BUDGET.collect = True
    os.chdir(ROOT)
    start = time.perf_counter()
    code = pytest.main([*(SUITES[a] for a in apis), "-q", "-p", "no:cacheprovider"])
    return int(code), time.perf_counter() - start


def summary(tally: fuzz_support.Tally, seconds: float) -> dict[str, Any]:
    operations = {
        key: {
            "cases": n,
            "statuses": dict(sorted(tally.statuses[key].items())),
            "failed": len(tally.failures[key]),
        }
        for key, n in sorted(tally.cases.items())
    }
    return {"seconds": round(seconds, 1), "operations": operations, "failures": _distinct(tally)}


def _distinct(tally: fuzz_support.Tally) -> dict[str, list[str]]:
    """One example per kind of failure (its first line), per operation."""
    out: dict[str, list[str]] = {}
    for key, failures in sorted(tally.failures.items()):
        if not failures:
            continue
        kinds: dict[str, str] = {}
        for failure in failures:
            kinds.setdefault(failure.splitlines()[0], failure)
        out[key] = list(kinds.values())
    return out


def print_report(report: dict[str, Any], examples: int) -> None:
    print(f"\nAPI fuzzing, {examples} examples per operation and mode: {report['seconds']} s")
    width = max((len(k) for k in report["operations"]), default=10)
    print(f"{'suite: operation':<{width}}  {'cases':>6}  {'failed':>6}  statuses")
    for key, row in report["operations"].items():
        statuses = " ".join(f"{code}x{n}" for code, n in row["statuses"].items())
        print(f"{key:<{width}}  {row['cases']:>6}  {row['failed']:>6}  {statuses}")
    total = sum(row["cases"] for row in report["operations"].values())
    failed = sum(row["failed"] for row in report["operations"].values())
    print(f"{'total':<{width}}  {total:>6}  {failed:>6}")
    for key, failures in report["failures"].items():
        print(f"\n{key}:")
        for failure in failures:
            print(f"  - {failure}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--api", choices=["device", "host", "both"], default="both")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    apis = list(SUITES) if args.api == "both" else [args.api]
    code, seconds = run(args.examples, apis)
    report = summary(fuzz_support.TALLY, seconds)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, args.examples)
    failed = any(row["failed"] for row in report["operations"].values())
    return 1 if failed or code not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())
