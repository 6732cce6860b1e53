"""Train a `home` adapter on synthetic homes x HA's sentence templates (+ the HA split's train
part), export it as a GGUF LoRA, and never touch the shipped adapter.

    python scripts/train_home.py [--out DIR] [--synth N] [--seed S] [--epochs E]
                                 [--first-layer L] [--max-steps K] [--no-ha]

Data: `synth.training_rows(seed, N)` (train homes x train templates, a fifth from the home-llm
corpus) plus the committed HA split's train part, each as the device prompt (adapted, with the
row's home context block) → canonical call. Writes DIR/candidate.gguf and DIR/train.json
(config, rows, minutes, tokens/s). Evaluate with scripts/bench/bench_home_generalize.py.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from edge_agent.host.curate import Record, curate_split
from edge_agent.host.examples import Tokenizer, build_examples
from edge_agent.host.finetune import TrainConfig, finetune
from edge_agent.host.pipeline import export_adapter
from edge_agent.models.catalog import load_catalog
from edge_agent.models.store import ModelStore
from edge_agent.skills.home import synth
from edge_agent.skills.home.toolset import home_toolset

# the headline configuration (scripts/bench/results/flywheel.md), one epoch over more data
CONFIG = TrainConfig(rank=16, alpha=32, first_layer=18, epochs=1.0, learning_rate=2e-3,
                     batch_size=4, warmup_steps=5, checkpoint_every=25)  # fmt: skip


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "train-home")
    ap.add_argument("--synth", type=int, default=1000, help="synthetic training rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=float, default=CONFIG.epochs)
    ap.add_argument("--first-layer", type=int, default=CONFIG.first_layer)
    ap.add_argument("--max-steps", type=int, default=None, help="stop early (speed probe)")
    ap.add_argument("--no-ha", action="store_true", help="synthetic rows only")
    ap.add_argument(
        "--base",
        type=Path,
        default=None,
        help="GGUF to train on (the weights the devices run, e.g. a requantized "
        "Q4_0); default: the catalog's default model",
    )
    return ap.parse_args()


def records(n_synth: int, seed: int, with_ha: bool) -> list[Record]:
    rows = [Record.model_validate(r) for r in synth.training_rows(seed, n_synth)]
    if with_ha:
        rows += curate_split().train
    random.Random(seed).shuffle(rows)
    return rows


def main() -> int:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = records(args.synth, args.seed, not args.no_ha)
    data_s = time.perf_counter() - started
    model_path = args.base or ModelStore(args.out / "models").ensure(load_catalog().default())
    tokenizer = Tokenizer(model_path)
    try:
        examples = build_examples(data, home_toolset(), tokenizer)
        pad = tokenizer.end_of_turn
    finally:
        tokenizer.close()
    config = TrainConfig(**CONFIG.to_dict() | {
        "epochs": args.epochs, "first_layer": args.first_layer, "max_steps": args.max_steps,
        "seed": args.seed})  # fmt: skip
    trained = finetune(model_path, examples, args.out / "train", config=config, pad_id=pad)
    adapter = export_adapter(trained.adapter_dir, model_path, args.out / "candidate.gguf")
    tokens = sum(len(e.input_ids) for e in examples) * min(args.epochs, 1.0)
    summary = {
        "adapter": str(adapter), "base": str(model_path), "rows": len(examples),
        "synth": args.synth, "seed": args.seed,
        "ha_train": not args.no_ha, "config": config.to_dict(), "steps": trained.steps,
        "data_minutes": round(data_s / 60, 2), "train_minutes": round(trained.seconds / 60, 2),
        "cache_minutes": round(trained.cache_seconds / 60, 2),
        "tokens_per_s": round(tokens / max(trained.seconds, 1e-9), 1)
        if args.max_steps is None else None,
    }  # fmt: skip
    (args.out / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
