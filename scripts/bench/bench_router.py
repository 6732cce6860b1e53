"""Heterogeneous routing on the HA split: how much the SLM serves, at what overall accuracy.

    python scripts/bench/bench_router.py [--target 0.97] [--threads 1] [--limit N]

No large model runs here, so the teacher is a STAND-IN TEACHER: a real OpenAI-compatible HTTP
server on 127.0.0.1 that answers each request with the dataset's gold call (it reads only
the anonymized request it is sent, as a remote model would). Escalated requests are then right
by construction; what is measured is the router's judgement: which requests it keeps local.

1. calibrate: the shipped `home` adapter (llama.cpp, one thread) on the validation split
   (79 rows) gives its signals and whether each call is exactly right; the thresholds that
   serve the most requests locally at the target accuracy are picked there.
2. evaluate: every test row (217) runs through the full router (local attempt, decision,
   escalation over HTTP through the same policy and execution, anonymized both ways).
3. the curve: overall accuracy against the share served locally as each signal's threshold
   varies, on the test rows, and the point the calibrated thresholds pick (measured).

Local latency is the local attempt (request → validated call, p50/p95). No remote latency is
reported: the stand-in's loopback round trip says nothing about a real large model.
Writes scripts/bench/results/router.json and router.png and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge_agent.adapters.shipped import adapter_for
from edge_agent.agent import Agent, AgentConfig
from edge_agent.anonymize import Anonymizer
from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.models.catalog import load_catalog
from edge_agent.models.store import ModelStore
from edge_agent.routing.calibration import (
    calibrate,
    calibration_for,
    collect,
    dumps_curve,
    outcome,
    plot_curves,
    quantiles,
    sweep,
)
from edge_agent.routing.remote import RemoteClient, RemoteConfig, TagMap
from edge_agent.routing.router import Router, SignalRecord
from edge_agent.skills.home.dataset import Row, load_split
from edge_agent.skills.home.inventory import Inventory
from edge_agent.skills.home.score import call_matches
from edge_agent.skills.home.skill import calibration_rows
from edge_agent.skills.home.toolset import home_toolset

RESULTS = Path(__file__).parent / "results"
TEACHER = "stand-in-teacher"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=float, default=0.97, help="overall accuracy to keep")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="first N rows of each split only")
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args()


# --- the stand-in teacher --------------------------------------------------------------------


class StandInTeacher:
    """Answers a request with the gold call of the row whose (anonymized) sentence it is.
    Personal values in the gold call are sent back as the tags the device used."""

    def __init__(self, rows: list[Row], anonymizer: Anonymizer) -> None:
        self.gold: dict[str, dict[str, Any]] = {}
        for row in rows:
            tags = TagMap(anonymizer)
            key = tags.scrub(row.sentence)
            call = row.call()
            self.gold[key] = {"name": call.name, "arguments": _tagged(call.arguments, tags)}
        self.requests = 0
        self.unknown = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests += 1
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        call = self.gold.get(user.split("\n\n", 1)[0])
        if call is None:
            self.unknown += 1
            return 500, {"error": {"message": "the stand-in teacher has no gold call for this"}}
        function = {"name": call["name"], "arguments": json.dumps(call["arguments"])}
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_0", "type": "function", "function": function}],
        }
        # no "usage": the stand-in does not tokenize, and inventing counts would mislead
        return 200, {"model": TEACHER, "choices": [{"index": 0, "message": message}]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                status, data = teacher.answer(body)
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _tagged(arguments: dict[str, Any], tags: TagMap) -> dict[str, Any]:
    out = dict(arguments)
    for key, value in arguments.items():
        for tag, original in tags.values.items():
            if isinstance(value, str):
                out[key] = out[key].replace(original, tag)
    return out


# --- the runs --------------------------------------------------------------------------------


def open_backend(threads: int) -> tuple[LlamaCppBackend, str]:
    path = ModelStore(Path(tempfile.mkdtemp())).ensure(load_catalog().default())
    backend = LlamaCppBackend(path, n_ctx=4096, n_threads=threads)
    shipped = adapter_for("home", backend.identity)
    if shipped is None:
        raise SystemExit("no shipped home adapter for the default model")
    backend.load_adapter(shipped.name, shipped.verified_path())
    backend.use_adapter(shipped.name)
    return backend, shipped.name


def run_test(backend, adapter, rows, router, progress) -> list[dict[str, Any]]:
    """Each test row through the full router; per row what was served and what was right."""
    config = AgentConfig(stop_after_call=True)
    out = []
    for i, row in enumerate(rows):
        agent = Agent(backend, home_toolset(inventory=row.inventory()), config=config,
                      adapter=adapter, model_name=backend.model_name, router=router)  # fmt: skip
        result = agent.run(row.sentence, area=row.speaker_area, confirmed=True)
        out.append(row_outcome(row, result))
        progress(i + 1, len(rows))
    return out


def row_outcome(row: Row, result: Any) -> dict[str, Any]:
    routing = result.routing
    served = result.tool_calls[0].call if result.tool_calls else None
    escalated = result.route == "escalated"
    local_call = routing.local_attempt.call if escalated else served
    tool_ms = sum(o.duration_ms for o in result.tool_calls)
    local_ms = routing.local_attempt.latency_ms if escalated else result.latency_ms - tool_ms
    return {
        "id": row.id,
        "route": result.route,
        "correct": call_matches(row.slots, row.intent, served),
        "local_correct": call_matches(row.slots, row.intent, local_call),
        "local_call": local_call.model_dump(exclude={"id"}) if local_call else None,
        "signals": routing.signals.model_dump(),
        "local_ms": local_ms,
        "remote_bytes": routing.remote_bytes,
        "remote_error": routing.remote_error,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    local = [r for r in rows if r["route"] != "escalated"]
    return {
        "n": n,
        "local_share": len(local) / n,
        "overall_accuracy": sum(r["correct"] for r in rows) / n,
        "accuracy_of_local_calls": sum(r["correct"] for r in local) / max(len(local), 1),
        "accuracy_of_escalated_calls": _ratio([r["correct"] for r in rows
                                               if r["route"] == "escalated"]),
        "local_only_accuracy": sum(r["local_correct"] for r in rows) / n,
        "escalated": n - len(local),
        "fallbacks": sum(r["route"] == "local_fallback" for r in rows),
        "local_latency_ms": quantiles([r["local_ms"] for r in rows]),
        "bytes_sent_to_teacher": sum(r["remote_bytes"] for r in rows),
    }  # fmt: skip


def _ratio(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def progress(label: str):
    def report(i: int, n: int | None = None) -> None:
        if i % 20 == 0 or i == n:
            print(f"  {label}: {i}{f'/{n}' if n else ''} rows", file=sys.stderr, flush=True)

    return report


def main() -> int:
    args = parse_args()
    validation, test = load_split("validation"), load_split("test")
    if args.limit:
        validation, test = validation[: args.limit], test[: args.limit]
    backend, adapter = open_backend(args.threads)
    started = time.perf_counter()
    val_records = collect(backend, calibration_rows(validation), adapter=adapter,
                          model_name=backend.model_name,
                          progress=progress("validation"))  # fmt: skip
    calibration = calibration_for(val_records, args.target, model=backend.model_name,
                                  adapter=adapter, skill="home")  # fmt: skip
    anonymizer = Anonymizer(b"bench-router-device-secret-32byt", Inventory.default().keep_words())
    teacher = StandInTeacher(test, anonymizer)
    remote = RemoteClient(RemoteConfig(url=teacher.url, model=TEACHER, retries=0),
                          anonymizer=anonymizer)  # fmt: skip
    router = Router(remote, calibration=calibration)
    try:
        rows = run_test(backend, adapter, test, router, progress("test"))
    finally:
        teacher.close()
    report = build_report(args, calibration, rows, teacher, time.perf_counter() - started)
    write(report, args.out, calibration, rows)
    print(table(report))
    return 0


def test_records(rows: list[dict[str, Any]]) -> list[SignalRecord]:
    return [SignalRecord(id=r["id"], signals=r["signals"], correct=r["local_correct"])
            for r in rows]  # fmt: skip


def build_report(args, calibration, rows, teacher, wall_s) -> dict[str, Any]:
    records = test_records(rows)
    predicted = outcome(records, calibration.thresholds)
    measured = summarize(rows)
    return {
        "teacher": "stand-in teacher (gold calls over HTTP on 127.0.0.1; not a real model)",
        "target": {"local_share": 0.80, "overall_accuracy": args.target},
        "met": measured["local_share"] >= 0.80 and measured["overall_accuracy"] >= args.target,
        "calibration": {"split": "validation", "thresholds": calibration.thresholds.model_dump(),
                        "reachable": calibration.met, **calibration.stats,
                        "local_latency_ms": quantiles([r.latency_ms for r in calibration.records])},
        "test": measured,
        "test_predicted_from_signals": predicted,
        "curves_test": {s: dumps_curve(sweep(records, s)) for s in ("min_logprob", "mean_logprob")},
        "curves_validation": {s: dumps_curve(sweep(calibration.records, s))
                              for s in ("min_logprob", "mean_logprob")},
        "test_at_other_targets": other_targets(calibration.records, records),
        "rows_test": rows,
        "rows_validation": [r.model_dump() for r in calibration.records],
        "teacher_requests": teacher.requests,
        "teacher_unknown": teacher.unknown,
        "meta": {"threads": args.threads, "wall_s": round(wall_s, 1), "limit": args.limit},
    }  # fmt: skip


def other_targets(validation: list[SignalRecord], test: list[SignalRecord]) -> dict[str, Any]:
    """Thresholds calibrated on validation for other targets, and what they do on test (the
    teacher is right by construction, so this is what a run would measure)."""
    out = {}
    for target in (0.90, 0.95, 0.97, 0.99):
        thresholds, met = calibrate(validation, target)
        out[f"{target:.2f}"] = {"thresholds": thresholds.model_dump(), "reachable": met,
                                "validation": outcome(validation, thresholds),
                                "test": outcome(test, thresholds)}  # fmt: skip
    return out


def write(report: dict[str, Any], out: Path, calibration, rows) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "router.json").write_text(json.dumps(report, indent=1) + "\n")
    records = test_records(rows)
    plot_curves(
        out / "router.png",
        {f"test, {s} threshold": sweep(records, s) for s in ("min_logprob", "mean_logprob")}
        | {"validation, min_logprob threshold": sweep(calibration.records, "min_logprob")},
        {"calibrated thresholds on test (measured)":
            (report["test"]["local_share"], report["test"]["overall_accuracy"])},
        title="SLM + stand-in teacher: HA test split, home adapter",
        target=(0.80, report["target"]["overall_accuracy"]),
    )  # fmt: skip


def table(report: dict[str, Any]) -> str:
    t, c = report["test"], report["calibration"]
    lat = t["local_latency_ms"]
    lines = [
        f"thresholds (validation, {int(c['n'])} rows): {c['thresholds']}",
        f"{'':34} {'local share':>11} {'overall':>8} {'local calls':>11}",
        f"{'validation (calibration)':34} {c['local_share']:>11.1%} {c['accuracy']:>8.1%} "
        f"{c['local_accuracy']:>11.1%}",
        f"{'test, all local':34} {1:>11.1%} {t['local_only_accuracy']:>8.1%} "
        f"{t['local_only_accuracy']:>11.1%}",
        f"{'test, routed (measured)':34} {t['local_share']:>11.1%} {t['overall_accuracy']:>8.1%} "
        f"{t['accuracy_of_local_calls']:>11.1%}",
        f"{'test, all escalated':34} {0:>11.1%} {'100% by construction':>20}",
        f"local attempt latency p50 / p95: {lat['p50']:.0f} / {lat['p95']:.0f} ms; "
        f"escalated {t['escalated']}, fallbacks {t['fallbacks']}, "
        f"bytes sent to the stand-in teacher {t['bytes_sent_to_teacher']}",
        f"target >= 80% local at >= {report['target']['overall_accuracy']:.0%}: "
        f"{'met' if report['met'] else 'MISSED'}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
