"""The flywheel's headline run, in one command: train the `home` adapter on the committed HA
split (its train part as teacher-labelled logs), gate it on the test part through llama.cpp,
and ship it in the package.

    python scripts/flywheel_headline.py [--out DIR] [--no-ship] [--epochs N] [--first-layer L]
                                        [--learning-rate LR] [--rank R] [--validate]

Prints base vs adapter on the test split (right tool, exact call) and the minutes per stage;
the numbers and what was tried are in scripts/bench/results/flywheel.md. `--validate` is for
choosing a configuration: it trains, exports and scores the adapter on the validation part
only (llama.cpp, 1 thread), never touching the test part, and ships nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from edge_agent.host.curate import Curated, curate_split
from edge_agent.host.finetune import TrainConfig, finetune
from edge_agent.host.pipeline import TurnResult, export_adapter, run_turn
from edge_agent.models.catalog import load_catalog
from edge_agent.models.gguf import identity_of, read_header
from edge_agent.models.store import ModelStore, sha256_file

SHIPPED = Path(__file__).resolve().parents[1] / "edge_agent/data/adapters/home-smollm2-135m.gguf"
# the headline configuration (see flywheel.md for the sweep that chose it)
HEADLINE = TrainConfig(rank=16, alpha=32, first_layer=18, epochs=2.0, learning_rate=2e-3,
                       batch_size=4, warmup_steps=5, checkpoint_every=20)  # fmt: skip


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "flywheel-home")
    ap.add_argument("--no-ship", action="store_true", help="do not overwrite the shipped adapter")
    ap.add_argument("--epochs", type=float, default=HEADLINE.epochs)
    ap.add_argument("--first-layer", type=int, default=HEADLINE.first_layer)
    ap.add_argument("--learning-rate", type=float, default=HEADLINE.learning_rate)
    ap.add_argument("--rank", type=int, default=HEADLINE.rank, help="LoRA rank (alpha = 2 rank)")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--validate", action="store_true",
                    help="score on the validation part only (to choose a config)")  # fmt: skip
    return ap.parse_args()


def ship(result: TurnResult, model_path: Path, dest: Path = SHIPPED) -> Path:
    """Copy the adapter into the package with its provenance next to it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.adapter, dest)
    meta = {
        "file": dest.name,
        "sha256": sha256_file(dest),
        "skill": "home",
        "base": identity_of(read_header(model_path)).as_dict() | {"file": model_path.name},
        "training": result.summary["train"],
        "data": result.summary["data"],
        "test_split": {"base": result.summary["incumbent"], "adapter": result.summary["candidate"]},
        "minutes": result.summary["minutes"],
    }
    dest.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return dest


def validate(
    curated: Curated, model_path: Path, out: Path, config: TrainConfig
) -> dict[str, object]:
    """Train, export, and score on the validation part: the only numbers a sweep may use."""
    from edge_agent.host.examples import Tokenizer, build_examples
    from edge_agent.host.gate import evaluate_adapter
    from edge_agent.skills.home.toolset import home_toolset

    tokenizer = Tokenizer(model_path)
    try:
        train, val = (build_examples(part, home_toolset(), tokenizer)
                      for part in (curated.train, curated.validation))  # fmt: skip
        pad = tokenizer.end_of_turn
    finally:
        tokenizer.close()
    trained = finetune(model_path, train, out / "train", config=config, validation=val,
                       pad_id=pad)  # fmt: skip
    adapter = export_adapter(trained.adapter_dir, model_path, out / "validate.gguf")
    rows = [r.as_row() for r in curated.validation]
    summary = evaluate_adapter(model_path, rows, adapter, threads=1).summary()
    return {"validation": summary, "validation_loss": trained.validation_loss,
            "train_minutes": round(trained.seconds / 60, 2),
            "cache_minutes": round(trained.cache_seconds / 60, 2)}  # fmt: skip


def main() -> int:
    args = parse_args()
    config = TrainConfig(**HEADLINE.to_dict() | {
        "epochs": args.epochs, "first_layer": args.first_layer, "rank": args.rank,
        "alpha": 2 * args.rank, "learning_rate": args.learning_rate,
        "max_steps": args.max_steps})  # fmt: skip
    model_path = ModelStore(args.out / "models").ensure(load_catalog().default())
    if args.validate:
        print(json.dumps(validate(curate_split(), model_path, args.out, config)))
        return 0
    result = run_turn(curate_split(), model_path, args.out, config=config)
    base, new = result.summary["incumbent"], result.summary["candidate"]
    print(json.dumps({"minutes": result.summary["minutes"], "base": base, "adapter": new}))
    print(f"base     right tool {base['right_tool']:.1%}  exact {base['exact']:.1%}")
    print(f"adapter  right tool {new['right_tool']:.1%}  exact {new['exact']:.1%}")
    if result.promoted and not args.no_ship:
        print(f"shipped {ship(result, model_path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
