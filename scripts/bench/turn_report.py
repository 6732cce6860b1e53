"""The report of scripts/bench/bench_turn.py: the Markdown tables and the results files."""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Stages in turn order: (key, label). Keys are what bench_turn's `Probe` records.
STAGES = [
    ("split", "split into steps"),
    ("context", "retrieval/context"),
    ("prompt", "prompt messages"),
    ("tokenize", "template + tokenize"),
    ("grammar", "grammar + oracle setup"),
    ("prefix", "prefix cache match"),
    ("prompt_eval", "prompt eval"),
    ("decode_eval", "decode eval"),
    ("sample", "sample + grammar check"),
    ("logprob", "logprobs"),
    ("jump", "jump-forward"),
    ("parse", "parse"),
    ("validate", "validate"),
    ("policy", "policy"),
    ("tool", "tool execution"),
    ("log", "log write"),
]


# -- report --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())  # fmt: skip
    return {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}  # fmt: skip


def render(result: dict[str, Any]) -> str:
    m, passes = result["machine"], result["passes"]
    lines = [f"machine: {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}; {m['date']}",
             f"load average (1/5/15 min): start {result['load_start']}, end {result['load_end']}",
             f"rows: {_rows_done(passes)} of the HA test split; model {passes[0]['model']}, "
             f"adapter {passes[0]['adapter']}", ""]  # fmt: skip
    lines += [f"- {_col(p)}: n_ctx {p['n_ctx']}, KV {p['kv_cache_type']}, flash attention "
              f"{p['flash_attn']}, draft tokens {p['draft_tokens']}, a failed call "
              f"{'sent back to the model' if p['retry_failed_calls'] else 'ends the turn'}"
              for p in passes] + [""]  # fmt: skip
    lines += _headline(passes) + [""] + _stage_table(passes) + [""] + _token_table(passes)
    for label, cold in result.get("cold", {}).items():
        lines += [""] + _cold_lines(label, cold)
    if result.get("importtime"):
        lines += [_import_line(result["importtime"])]
    return "\n".join(lines)


def _col(p: dict) -> str:
    where = f"{p['threads']} thread(s)"
    return where if p["label"] == "now" else f"{p['label']}, {where}"


def _rows_done(passes: list[dict]) -> str:
    return ", ".join(f"{p['rows']} at {_col(p)} ({p['wall_s']:.0f} s for the pass)"
                     for p in passes)  # fmt: skip


def _headline(passes: list[dict]) -> list[str]:
    head = "| figure | " + " | ".join(_col(p) for p in passes) + " |"
    out = [head, "|---|" + "---:|" * len(passes)]

    def row(label: str, cell: Callable[[dict], str]) -> None:
        out.append(f"| {label} | " + " | ".join(cell(p) for p in passes) + " |")

    row("ratio agent ÷ raw, p50 of rows (target ≤ 0.8)", lambda p: f"{p['p50']['ratio']:.2f}")
    row("ratio generate ÷ raw, p50 of rows", lambda p: f"{p['p50']['ratio_generate']:.2f}")
    row("agent request → validated call, p50 / p95 ms", lambda p: _pq(p, "call_ms"))
    row("agent whole turn (tool + log too), p50 / p95 ms", lambda p: _pq(p, "agent_ms"))
    row("agent backend generate, p50 / p95 ms", lambda p: _pq(p, "generate_ms"))
    row("raw llama-cpp-python same tokens, p50 / p95 ms", lambda p: _pq(p, "raw_ms"))
    row("exact call / right tool", lambda p: f"{p['exact']:.1%} / {p['right_tool']:.1%}")
    row("peak RSS of this process (agent + raw model), MB", lambda p: f"{p['peak_rss_mb']:.0f}")
    return out


def _pq(p: dict, key: str) -> str:
    return f"{p['p50'][key]:.0f} / {p['p95'][key]:.0f}"


def _stage_table(passes: list[dict]) -> list[str]:
    head = "| agent stage, mean / p50 ms per turn | " + " | ".join(
        _col(p) for p in passes) + " |"  # fmt: skip
    out = [head, "|---|" + "---:|" * len(passes)]
    for key, label in STAGES:
        cells = [f"{p['stages'][key]['mean_ms']:.1f} / {p['stages'][key]['p50_ms']:.1f}"
                 for p in passes]  # fmt: skip
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    other = [p["mean"]["agent_ms"] - sum(s["mean_ms"] for s in p["stages"].values())
             for p in passes]  # fmt: skip
    out.append("| unaccounted (agent loop, glue) | " + " | ".join(f"{o:.1f}" for o in other) + " |")
    return out


def _token_table(passes: list[dict]) -> list[str]:
    labels = [("prompt_tokens", "prompt tokens"), ("cached_tokens", "  of them from the KV cache"),
              ("prompt_eval_tokens", "tokens in the first eval (prompt rest + forced)"),
              ("raw_prompt_eval_tokens", "raw: prompt tokens evaluated"),
              ("out_tokens", "output tokens"), ("forced_tokens", "  forced (jump-forward)"),
              ("sampled_tokens", "  sampled (one decode step each)"),
              ("decode_eval_calls", "decode evals after the prompt"),
              ("generations", "generations per turn"),
              ("raw_greedy_agrees", "raw greedy pick = agent token")]  # fmt: skip
    head = "| per turn, mean | " + " | ".join(_col(p) for p in passes) + " |"
    out = [head, "|---|" + "---:|" * len(passes)]
    for key, label in labels:
        out.append(f"| {label} | " + " | ".join(f"{p['mean'][key]:.1f}" for p in passes) + " |")
    return out


def _cold_lines(label: str, cold: dict) -> list[str]:
    return [f"cold start, {label} ({cold['command']}, median of {cold['reps']}, fresh process, "
            f"warm home): first output {cold['first_output_ms']:.0f} ms, exit "
            f"{cold['exit_ms']:.0f} ms, turn latency inside {cold['turn_latency_ms']:.0f} ms, "
            f"outcome {cold['outcome']}, peak RSS of `edge-agent run` "
            f"{cold['peak_rss_mb']:.0f} MB"]  # fmt: skip


def _import_line(imports: dict) -> str:
    top = ", ".join(f"{n} {ms:.0f}" for n, ms in imports["top"])
    return (f"imports of that command now (python -X importtime): {imports['total_ms']:.0f} ms "
            f"in all; heaviest top-level (cumulative ms): {top}")  # fmt: skip


def write(result: dict[str, Any], text: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "turn.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    note = (
        "Written by scripts/bench/bench_turn.py (issue 16, measure first). The box is "
        "shared with other jobs: read absolute times with the load average.\n\n"
    )
    (out / "turn.md").write_text("# A home turn beside raw llama-cpp-python\n\n" + note
                                 + text + "\n")  # fmt: skip
