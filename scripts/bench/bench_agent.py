"""Home Assistant tool calls on the default model: accuracy and latency, side by side.

    python scripts/bench/bench_agent.py [--split test] [--limit N] [--adapter PATH] [--json]

Modes, measured in one run on the same rows, interleaved row by row so machine noise hits
all of them alike:
  full         prefix KV cache + jump-forward (the default runtime)
  no-jump      prefix cache only: every token of the call decoded one by one
  no-cache     jump-forward only: the whole prompt evaluated for every request
Latency is request → validated tool call (context retrieval, prompt eval of what is not
cached, decoding, parsing and validation; the simulated tool's own run excluded), warm (the
first request of each mode is a warm-up and not counted). Accuracy is scored on
the first call: right tool, and exact call (name + arguments, case-folded, numbers numeric,
lists as sets). Expect the *base* model to be poor: the flywheel (issue 6) fixes that.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from edge_agent import prompt
from edge_agent.agent import Agent, AgentConfig
from edge_agent.backends import GenerationRequest
from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.models.catalog import load_catalog
from edge_agent.models.store import ModelStore
from edge_agent.skills.home.dataset import load_split
from edge_agent.skills.home.evaluate import first_call
from edge_agent.skills.home.score import score
from edge_agent.skills.home.toolset import home_toolset
from edge_agent.types import Message

MODES = {
    "full": {"jump_forward": True, "cache": True},
    "no-jump": {"jump_forward": False, "cache": True},
    "no-cache": {"jump_forward": True, "cache": False},
}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test", choices=["train", "validation", "test"])
    ap.add_argument("--limit", type=int, default=0, help="first N rows only")
    ap.add_argument("--modes", default="full,no-jump,no-cache")
    ap.add_argument("--adapter", type=Path, default=None, help="GGUF LoRA adapter")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    return ap.parse_args()


def open_backend(args: argparse.Namespace) -> LlamaCppBackend:
    path = ModelStore(Path(tempfile.mkdtemp())).ensure(load_catalog().default())
    backend = LlamaCppBackend(path, n_ctx=4096, n_threads=args.threads)
    if args.adapter:
        backend.load_adapter("bench", args.adapter)
        backend.use_adapter("bench")
    return backend


def run_row(backend, row, mode: dict, adapter: str | None):
    toolset = home_toolset(inventory=row.inventory())
    if mode["cache"]:
        forget_last_request(backend, toolset, adapter)
    else:
        backend.clear_cache()
    backend.jump_forward = mode["jump_forward"]
    config = AgentConfig(max_steps=1, repair_attempts=0, stop_after_call=True)
    agent = Agent(backend, toolset, config=config, adapter=adapter)
    result = agent.run(row.sentence, area=row.speaker_area, confirmed=True)
    ms = result.latency_ms - sum(o.duration_ms for o in result.tool_calls)
    return first_call(result), ms, result.usage


def forget_last_request(backend, toolset, adapter: str | None) -> None:
    """Leave only the shared system prompt reusable, as after any other command: modes run
    the same row back to back, and the second would otherwise find its whole prompt cached."""
    system = Message(role="system", content=prompt.system_prompt(toolset, adapted=bool(adapter)))
    other = [system, Message(role="user", content="-")]
    backend.complete(GenerationRequest(messages=other, max_tokens=1))


def main() -> int:
    args = parse_args()
    rows = load_split(args.split)
    rows = rows[: args.limit] if args.limit else rows
    modes = {m: MODES[m] for m in args.modes.split(",")}
    backend = open_backend(args)
    adapter = "bench" if args.adapter else None
    preds = {m: {} for m in modes}
    lat = {m: [] for m in modes}
    tokens = {m: [] for m in modes}
    for mode in modes.values():  # warm-up: fills the prefix cache, pages the model in
        run_row(backend, rows[0], mode, adapter)
    started = time.perf_counter()
    for i, row in enumerate(rows):
        for m, mode in modes.items():
            call, ms, usage = run_row(backend, row, mode, adapter)
            preds[m][row.id] = call
            lat[m].append(ms)
            tokens[m].append(usage.completion_tokens)
        if not args.json and (i + 1) % 20 == 0:
            print(f"  {i + 1}/{len(rows)} rows", file=sys.stderr)
    report = {m: summarize(preds[m], lat[m], rows) | mean_tokens(tokens[m]) for m in modes}
    report["_meta"] = {
        "rows": len(rows),
        "split": args.split,
        "adapter": str(args.adapter) if args.adapter else None,
        "threads": args.threads,
        "wall_s": round(time.perf_counter() - started, 1),
        "same_call_as_first_mode": same_calls(preds, rows),
    }
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


def summarize(preds, latencies, rows) -> dict:
    rep = score(preds, rows)
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "right_tool": round(rep.function_accuracy, 4),
        "exact": round(rep.exact_match, 4),
        "slot_f1": round(rep.slot_f1, 4),
        "no_call": rep.no_call,
        "p50_ms": round(pick(0.5), 1),
        "p95_ms": round(pick(0.95), 1),
    }


def mean_tokens(counts: list[int]) -> dict:
    return {"mean_tokens": round(sum(counts) / max(len(counts), 1), 1)}


def same_calls(preds: dict, rows) -> dict:
    """Per mode, the share of rows whose call equals the first mode's (jump-forward changes
    the text the model sees, so it may change its choices)."""
    first, *others = preds
    same = lambda a, b: (a and a.name, a and a.arguments) == (b and b.name, b and b.arguments)  # noqa: E731
    return {m: round(sum(same(preds[first][r.id], preds[m][r.id]) for r in rows) / len(rows), 3)
            for m in others}  # fmt: skip


def table(report: dict) -> str:
    lines = [
        f"{'mode':10} {'right tool':>10} {'exact':>7} {'p50 ms':>8} {'p95 ms':>8} {'tokens':>7}"
    ]
    for m, r in report.items():
        if m.startswith("_"):
            continue
        acc = f"{r['right_tool']:>10.1%} {r['exact']:>7.1%}"
        lines.append(
            f"{m:10} {acc} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['mean_tokens']:>7.1f}"
        )
    lines.append(json.dumps(report["_meta"]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
