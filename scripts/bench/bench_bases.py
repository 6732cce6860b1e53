"""Base models side by side for the `home` skill: each base gets a LoRA trained on the same
data with the same recipe, then both run the HA test split through llama.cpp.

    python scripts/bench/bench_bases.py train --model NAME [--out DIR] [--epochs N]
                                              [--first-layer L] [--data split|synth]
    python scripts/bench/bench_bases.py eval --model NAME [--adapter FILE|none] [--limit N]
    python scripts/bench/bench_bases.py record RESULT.json...   # into base_models.json

`train` curates the committed HA split (or ha-data's synthesized homes, `--data synth`),
tokenizes it as the device prompts for that base, trains and exports the adapter (resumable:
rerun the same command). `eval` scores the test part (exact, right tool), and measures p50
latency per command, decode tokens/s and peak RSS of the process (one llama.cpp thread);
it prints one JSON line. `record` merges such lines into
edge_agent/data/base_models.json, which `edge_agent.host.select` reads to pick a base per
device class. Numbers and the rule: scripts/bench/results/bases.md.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_agent.host.finetune import TrainConfig
from edge_agent.models.catalog import load_catalog
from edge_agent.models.store import ModelStore

OUT = Path(tempfile.gettempdir()) / "bench-bases"
# the home headline recipe (flywheel.md); LoRA on about the top 40 % of the layers
RECIPE = TrainConfig(rank=16, alpha=32, epochs=2.0, learning_rate=2e-3, batch_size=4,
                     warmup_steps=5, checkpoint_every=20, threads=1)  # fmt: skip
FIRST_LAYER = {"smollm2": 18, "gemma3": 11}


def model_path(name: str, out: Path) -> tuple[Path, str]:
    entry = load_catalog().get(name)
    return ModelStore(out / "models").ensure(entry), entry.family


def curated(data: str, n_synth: int = 1000) -> Any:
    """The HA split; with "synth", its train part plus ha-data's synthesized multi-home rows
    (the same rows for every base: seed 0)."""
    import random

    from edge_agent.host.curate import Record, curate_split

    split = curate_split()
    if data == "synth":
        from edge_agent.skills.home import synth

        split.train += [Record.model_validate(r) for r in synth.training_rows(0, n_synth)]
        random.Random(0).shuffle(split.train)
    return split


def train(args: argparse.Namespace) -> dict[str, Any]:
    from edge_agent.host.finetune import finetune
    from edge_agent.host.pipeline import build_training, export_adapter
    from edge_agent.skills.home.toolset import home_toolset

    path, family = model_path(args.model, args.out)
    run = args.out / f"{args.model}-{args.data}"
    first = args.first_layer if args.first_layer is not None else FIRST_LAYER[family]
    config = TrainConfig(**RECIPE.to_dict() | {"epochs": args.epochs, "first_layer": first,
                                                "max_steps": args.max_steps})  # fmt: skip
    examples = build_training(curated(args.data), home_toolset(), path)
    trained = finetune(path, examples.train, run / "train", config=config,
                       validation=examples.validation, pad_id=examples.pad_id)  # fmt: skip
    adapter = export_adapter(trained.adapter_dir, path, run / "home.gguf")
    return {"model": args.model, "data": args.data, "adapter": str(adapter),
            "adapter_mb": round(adapter.stat().st_size / 2**20, 2),
            "first_layer": first, "epochs": args.epochs, "steps": trained.steps,
            "train_wall_min": round(trained.seconds / 60, 2),
            "cache_min": round(trained.cache_seconds / 60, 2),
            "train_tokens_per_s": round(trained.tokens_per_s, 1),
            "validation_loss": trained.validation_loss,
            "mean_tokens": round(sum(len(e.input_ids) for e in examples.train)
                                 / len(examples.train), 1)}  # fmt: skip


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from edge_agent.host.gate import evaluate_adapter

    path, _family = model_path(args.model, args.out)
    adapter = None if args.adapter in (None, "none") else Path(args.adapter)
    rows = [r.as_row() for r in curated("split").eval]
    rows = rows[:: math.ceil(len(rows) / args.limit)] if args.limit else rows  # spread evenly
    started = time.perf_counter()
    result = evaluate_adapter(path, rows, adapter, threads=1)
    wall = time.perf_counter() - started
    tokens = sum(r.usage.completion_tokens for r in result.results.values())
    generate_s = sum(result.latencies_ms) / 1000
    return {"model": args.model, "adapter": str(adapter) if adapter else None,
            "adapter_mb": round(adapter.stat().st_size / 2**20, 2) if adapter else 0.0,
            **{k: round(v, 4) for k, v in result.summary().items()},
            "decode_tokens_per_s": round(tokens / generate_s, 1) if generate_s else 0.0,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "model_mb": round(path.stat().st_size / 2**20, 1), "wall_s": round(wall, 1),
            "threads": 1}  # fmt: skip


def record(paths: list[Path]) -> dict[str, Any]:
    from edge_agent.host.select import MEASURED, record_measurement

    for p in paths:
        for line in p.read_text().splitlines():
            if line.strip().startswith("{"):
                record_measurement(json.loads(line), MEASURED)
    return json.loads(MEASURED.read_text())


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("train", "eval", "record"))
    ap.add_argument("results", nargs="*", type=Path)
    ap.add_argument("--model", default="smollm2-135m-instruct-q4_1")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--data", choices=("split", "synth"), default="split")
    ap.add_argument("--epochs", type=float, default=RECIPE.epochs)
    ap.add_argument("--first-layer", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--adapter", default=None, help="an adapter GGUF, or none for the base")
    ap.add_argument("--limit", type=int, default=None, help="about N test rows, evenly spread")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    stages = {"train": train, "eval": evaluate}
    out = record(args.results) if args.stage == "record" else stages[args.stage](args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
