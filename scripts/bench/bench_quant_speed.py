"""Quantizations of the default model for the `home` turn: speed and accuracy side by side.

    .venv/bin/python scripts/bench/bench_quant_speed.py [--variants q4_0,q8_0] [--limit 0]

Each variant is the packaged Q4_1 requantized by llama.cpp (`edge_agent.models.requantize`,
as a `package_requantize` catalog entry builds it on a device), loaded in ONE process beside
the Q4_1 itself with the shipped `home` adapter. Per variant: llama.cpp's cost to evaluate a
64-token batch and one token (median of 9, interleaved), then the HA test split row by row,
the variants' order alternating per row: exact call, right tool, p50/p95 of request →
answer. Results go to scripts/bench/results/quant_speed.md and .json.

Why: llama.cpp repacks Q4_0 (and Q8_0) weights for AVX2/AVX-512 at load time, so a prompt,
the bulk of a home turn, is evaluated much faster than from Q4_1; the question is what each
costs in accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def build(variant: str, folder: Path) -> Path:
    from edge_agent.models.catalog import load_catalog
    from edge_agent.models.requantize import requantize_gguf
    from edge_agent.models.store import ModelStore
    from edge_agent.settings import load_settings

    source = ModelStore(load_settings().models_dir).ensure(load_catalog().default())
    return requantize_gguf(source, folder / f"smollm2-{variant}.gguf", variant,
                           from_quantized=True)  # fmt: skip


def batch_ms(rt: Any, size: int, reps: int = 9) -> float:
    """llama.cpp evaluating ``size`` new tokens after a 40-token prefix, median ms."""
    import llama_cpp

    llm = rt.backend._llama
    tokens = llm.tokenize(b"turn on the kitchen light and then the hallway light please " * 8,
                          add_bos=False)  # fmt: skip
    times = []
    for _ in range(reps):
        llm.n_tokens = 0
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm.ctx), -1, 0, -1)
        llm.eval(tokens[:40])
        t0 = time.perf_counter()
        llm.eval(tokens[40 : 40 + size])
        times.append((time.perf_counter() - t0) * 1000)
    rt.backend.clear_cache()
    return statistics.median(times)


def evaluate(sides: dict[str, Any], rows: list[Any]) -> dict[str, dict[str, Any]]:
    from edge_agent.skills.home.evaluate import first_call
    from edge_agent.skills.home.score import score
    from edge_agent.skills.home.toolset import home_toolset

    preds: dict[str, dict] = {name: {} for name in sides}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i, row in enumerate(rows):
        order = list(sides.items()) if i % 2 == 0 else list(sides.items())[::-1]
        for name, rt in order:
            agent = rt.agent(home_toolset(inventory=row.inventory()), skill=rt.skill("home"))
            t0 = time.perf_counter()
            result = agent.run(row.sentence, area=row.speaker_area, confirmed=True)
            times[name].append((time.perf_counter() - t0) * 1000)
            preds[name][row.id] = first_call(result)
        if i % 20 == 0:
            print(f"  {i + 1}/{len(rows)} rows", file=sys.stderr)
    out = {}
    for name in sides:
        report, ms = score(preds[name], rows), sorted(times[name])
        p95 = ms[int(0.95 * (len(ms) - 1))]
        out[name] = {"exact": report.exact_match, "right_tool": report.function_accuracy,
                     "p50_ms": statistics.median(ms), "p95_ms": p95}  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="q4_0,q8_0")
    ap.add_argument("--limit", type=int, default=0, help="first N test rows (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    from edge_agent.runtime import open_runtime
    from edge_agent.skills.home.dataset import load_split

    os.environ["EDGE_AGENT_HOME"] = tempfile.mkdtemp(prefix="bench-quant-")
    folder = Path(tempfile.mkdtemp(prefix="bench-quant-models-"))
    paths = {"q4_1": None} | {v: build(v, folder) for v in args.variants.split(",")}
    sides = {name: open_runtime(threads=args.threads, turn_deadline_s=None,
                                **({"model": str(p)} if p else {}))
             for name, p in paths.items()}  # fmt: skip
    sizes = {name: (p or sides[name].backend._path).stat().st_size / 2**20
             for name, p in paths.items()}  # fmt: skip
    speed = {name: {"eval_64_ms": batch_ms(rt, 64), "eval_1_ms": batch_ms(rt, 1)}
             for name, rt in sides.items()}  # fmt: skip
    rows = load_split("test")
    rows = rows[: args.limit] if args.limit else rows
    started = [round(x, 2) for x in os.getloadavg()]
    accuracy = evaluate(sides, rows)
    result = {"threads": args.threads, "rows": len(rows), "load_start": started,
              "load_end": [round(x, 2) for x in os.getloadavg()],
              "variants": {n: {"size_mb": sizes[n]} | speed[n] | accuracy[n]
                           for n in sides}}  # fmt: skip
    text = render(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quant_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "quant_speed.md").write_text(text + "\n")
    print(text)
    return 0


def render(result: dict[str, Any]) -> str:
    lines = ["# SmolLM2-135M quantizations for the home turn (bench_quant_speed.py)",
             "", f"{result['rows']} HA test rows, {result['threads']} thread(s), shipped `home` "
             f"adapter; load average {result['load_start']} → {result['load_end']} (2 cores, "
             "shared)", "",
             "| variant | MB | eval 64 tokens ms | eval 1 token ms | exact | right tool | "
             "p50 ms | p95 ms |", "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, v in result["variants"].items():
        lines.append(f"| {name} | {v['size_mb']:.1f} | {v['eval_64_ms']:.1f} | "
                     f"{v['eval_1_ms']:.1f} | {v['exact']:.1%} | {v['right_tool']:.1%} | "
                     f"{v['p50_ms']:.0f} | {v['p95_ms']:.0f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
