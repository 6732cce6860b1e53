"""KV cache type and flash attention, side by side on the HA test split: which one to ship.

    .venv/bin/python scripts/bench/bench_kv.py [--limit 20] [--threads 1]

For each legal pair of {f16, q8_0} x {flash attention off, on} (llama.cpp refuses a q8_0
cache without flash attention), in ONE process: a device profile like generic-x86-64 with
that pair, ``open_runtime`` at the context sized to the ``home`` skill (as `edge-agent run`
gets it), the shipped ``home`` adapter (``rt.use_skill_adapter("home")``), then the rows
interleaved config by config, each scored as ``skills.home.evaluate`` scores it (one step,
the first call, the row's own home and speaker area). Per config: exact-call accuracy, p50 /
p95 ms per row (request -> validated call), and resident memory: what the process grew by
when the config opened and ran its first row (its KV cache, buffers and its own mapping of
the weights), and the process's RSS after all rows. Results: scripts/bench/results/kv.md and
kv.json (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from edge_agent.runtime import Runtime, open_runtime
from edge_agent.skills.home import dataset
from edge_agent.skills.home.evaluate import evaluate
from edge_agent.skills.home.score import score
from edge_agent.types import ToolCall

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "scripts" / "bench" / "results"
BASE_PROFILE = ROOT / "device_profiles" / "generic-x86-64.toml"
CONFIGS = [("f16", False), ("f16", True), ("q8_0", True)]  # q8_0 needs flash attention


@dataclass
class Config:
    kv: str
    flash: bool
    runtime: Runtime
    adapter: str | None
    opened_mb: float  # the process grew by this opening it and running its first row
    predictions: dict[str, ToolCall | None] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.kv} flash {'on' if self.flash else 'off'}"


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / (1024 * 1024)


def write_profile(folder: Path, kv: str, flash: bool) -> str:
    name = f"kv-{kv.replace('_', '')}-{'fa' if flash else 'nofa'}"
    text = BASE_PROFILE.read_text(encoding="utf-8")
    text = text.replace('name = "generic-x86-64"', f'name = "{name}"')
    text = text.replace('kv_cache_type = "f16"', f'kv_cache_type = "{kv}"')
    text = text.replace("flash_attention = false", f"flash_attention = {str(flash).lower()}")
    (folder / f"{name}.toml").write_text(text, encoding="utf-8")
    return name


def open_config(folder: Path, kv: str, flash: bool, threads: int, warm: Any) -> Config:
    before = rss_mb()
    rt = open_runtime(
        profile=write_profile(folder, kv, flash), profiles_dir=folder, threads=threads,
        log_enabled=False,
    )  # fmt: skip
    adapter = rt.use_skill_adapter("home")
    evaluate(rt.pinned_backend(adapter), [warm], adapter=adapter)  # touches weights and cache
    return Config(kv, flash, rt, adapter, rss_mb() - before)


def run_row(config: Config, row: Any) -> None:
    ev = evaluate(config.runtime.pinned_backend(config.adapter), [row], adapter=config.adapter)
    config.predictions[row.id] = ev.predictions[row.id]
    config.latencies_ms += ev.latencies_ms


def summary(config: Config, rows: list[Any]) -> dict[str, Any]:
    report = score(config.predictions, rows)
    lat = sorted(config.latencies_ms)
    return {
        "config": config.name, "kv_cache_type": config.kv, "flash_attention": config.flash,
        "context_size": config.runtime.plan.context_size, "adapter": config.adapter,
        "n": report.n, "exact": report.exact_match, "right_tool": report.function_accuracy,
        "p50_ms": statistics.median(lat), "p95_ms": lat[min(len(lat) - 1, int(0.95 * len(lat)))],
        "opened_rss_mb": config.opened_mb,
        "estimated_mb": config.runtime.plan.memory_mb(),
    }  # fmt: skip


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| config | context | exact % | right tool % | p50 ms | p95 ms | RSS opened MB "
        "| est. KV MB | est. buffers MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        est = r["estimated_mb"]
        lines.append(
            f"| {r['config']} | {r['context_size']} | {100 * r['exact']:.1f} "
            f"| {100 * r['right_tool']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} "
            f"| {r['opened_rss_mb']:.0f} | {est['kv_cache']:.0f} | {est['compute_buffers']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="the first N test rows")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("EDGE_AGENT_HOME", tempfile.mkdtemp(prefix="bench-kv-"))
    rows = dataset.load_split("test")[: args.limit]
    started, baseline = time.time(), rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        configs = [open_config(Path(tmp), kv, fa, args.threads, rows[0]) for kv, fa in CONFIGS]
        for row in rows:  # interleaved: each config sees the same load
            for config in configs:
                run_row(config, row)
        results = [summary(c, rows) for c in configs]
        final_rss = rss_mb()
        for config in configs:
            config.runtime.close()
    report(args, rows, results, baseline=baseline, final=final_rss, seconds=time.time() - started)


def report(
    args: Any, rows: list[Any], results: list[dict[str, Any]], *, baseline: float,
    final: float, seconds: float,
) -> None:  # fmt: skip
    load = os.getloadavg()
    head = (
        f"KV cache type x flash attention, HA test split ({len(rows)} rows), "
        f"{args.threads} thread(s), {platform.processor() or platform.machine()}, "
        f"{psutil.cpu_count(logical=False)} cores, load avg {load[0]:.2f} at the end, "
        f"{datetime.datetime.now().isoformat(timespec='minutes')}; process RSS "
        f"{baseline:.0f} MB before any model, {final:.0f} MB with all {len(results)} open; "
        f"{seconds:.0f} s"
    )
    note = (
        "RSS opened: what the process grew by opening the config and running its first row; "
        "the first config's also holds one-time imports and the home data (~10-20 MB). "
        "Accuracy on a --limit run moves 100/N points per row: compare on the full split."
    )
    text = f"{head}\n\n{table(results)}\n\n{note}\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kv.md").write_text(
        f"# KV cache type (scripts/bench/bench_kv.py)\n\n"
        f"`.venv/bin/python scripts/bench/bench_kv.py --limit {args.limit} "
        f"--threads {args.threads}`\n\n{text}",
        encoding="utf-8",
    )
    data = {"rows": len(rows), "threads": args.threads, "load_avg": load,
            "baseline_rss_mb": baseline, "final_rss_mb": final, "results": results}  # fmt: skip
    (args.out / "kv.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
