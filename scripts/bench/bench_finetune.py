"""LoRA training step time on the default model, with and without the frozen-prefix cache.

    python scripts/bench/bench_finetune.py [--examples 32] [--steps 8] [--first-layer 18]
                                           [--out scripts/bench/results/finetune.json]

Side by side in one run on SmolLM2-135M-Instruct (the shipped Q4_1 GGUF, dequantized by
transformers), 1 torch thread, a fixed subset of the HA train split (the first N curated
records by id), the headline LoRA (r=16 on every projection of layers >= first layer,
batch 4). Two measurements:

  interleaved  one model; each step's batch runs forward + backward uncached and cached, in
               alternating order, timed in wall and in CPU seconds (the host is shared: CPU
               time is the steadier number), plus the loss difference between the two.
  end-to-end   `finetune()` itself, `steps` steps uncached then cached: seconds per step
               (optimizer included) and the one-off cost of building and saving the cache.

Also: the cache's memory, and its cost extrapolated to the whole train split.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_agent.host.curate import curate_split
from edge_agent.host.examples import Example, Tokenizer, build_examples
from edge_agent.host.finetune import (
    TrainConfig,
    batch_loss,
    collate,
    finetune,
    lora_model,
    make_batches,
)
from edge_agent.host.prefix_cache import PrefixCache
from edge_agent.models.catalog import load_catalog
from edge_agent.models.store import ModelStore
from edge_agent.skills.home.toolset import home_toolset

RESULTS = Path(__file__).resolve().parent / "results" / "finetune.json"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="training steps per measurement")
    ap.add_argument("--first-layer", type=int, default=18)
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args()


def load_examples(model_path: Path, n: int) -> tuple[list[Example], int, float]:
    """The first `n` curated train records as examples; also the split's size and mean
    example length in tokens (to extrapolate to the whole split)."""
    tokenizer = Tokenizer(model_path)
    try:
        examples = build_examples(curate_split().train, home_toolset(), tokenizer)
    finally:
        tokenizer.close()
    return examples[:n], len(examples), statistics.fmean(len(e.input_ids) for e in examples)


class Timer:
    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def interleaved(model_path: Path, examples: list[Example], config: TrainConfig,
                steps: int) -> dict[str, Any]:  # fmt: skip
    """Forward + backward on the same batches, uncached and cached, alternating."""
    model, start = lora_model(model_path, config)
    model.train()
    with Timer() as build:
        cache = PrefixCache.build(model.get_base_model().model, examples, start)
    batches = make_batches(examples, config.batch_size, config.seed)
    times: dict[str, list[Timer]] = {"uncached": [], "cached": []}
    diffs = []
    for step in range(steps):
        rows = batches[step % len(batches)]
        batch = collate([examples[i] for i in rows], pad_id=0)
        batch["states"] = cache.batch(rows, batch["input_ids"].shape[1])
        losses = {}
        for mode in ("uncached", "cached") if step % 2 == 0 else ("cached", "uncached"):
            model.zero_grad(set_to_none=True)
            with Timer() as t:
                loss = batch_loss(model, batch, cache if mode == "cached" else None)
                loss.backward()
            times[mode].append(t)
            losses[mode] = float(loss)
        diffs.append(abs(losses["uncached"] - losses["cached"]))
    return _interleaved_summary(times, build, cache, len(examples), max(diffs))


def _interleaved_summary(times: dict[str, list[Timer]], build: Timer, cache: PrefixCache,
                         n: int, max_diff: float) -> dict[str, Any]:  # fmt: skip
    def med(mode: str, kind: str) -> float:
        return round(statistics.median(getattr(t, kind) for t in times[mode]), 3)

    wall = {m: med(m, "wall") for m in times}
    cpu = {m: med(m, "cpu") for m in times}
    return {
        "median_wall_s_per_step": wall, "median_cpu_s_per_step": cpu,
        "speedup_wall": round(wall["uncached"] / wall["cached"], 2),
        "speedup_cpu": round(cpu["uncached"] / cpu["cached"], 2),
        "cache_build": {"wall_s": round(build.wall, 2), "cpu_s": round(build.cpu, 2),
                        "cpu_s_per_example": round(build.cpu / n, 4),
                        "mb": round(cache.nbytes / 2**20, 2)},
        "max_loss_diff": max_diff,
    }  # fmt: skip


def end_to_end(model_path: Path, examples: list[Example], config: TrainConfig,
               out: Path) -> dict[str, Any]:  # fmt: skip
    runs = {}
    for cached in (False, True):
        run_dir = out / ("cached" if cached else "uncached")
        run_config = TrainConfig(**config.to_dict() | {"prefix_cache": cached})
        # pad id 0: right padding is never attended to, so its value changes nothing
        result = finetune(model_path, examples, run_dir, config=run_config, pad_id=0,
                          progress=False)  # fmt: skip
        losses = json.loads((run_dir / "training.json").read_text())["losses"]
        runs["cached" if cached else "uncached"] = {
            "wall_s_per_step": round(result.seconds / result.steps, 3),
            "cache_wall_s": round(result.cache_seconds, 2), "losses": losses,
        }  # fmt: skip
    pairs = zip(runs["uncached"].pop("losses"), runs["cached"].pop("losses"), strict=True)
    return runs | {"max_loss_diff": max(abs(a - b) for a, b in pairs)}


def main() -> int:
    import torch

    args = parse_args()
    torch.set_num_threads(1)
    store = Path(tempfile.gettempdir()) / "edge-agent-bench-store"
    model_path = ModelStore(store).ensure(load_catalog().default())
    examples, n_split, mean_len = load_examples(model_path, args.examples)
    config = TrainConfig(rank=16, alpha=32, first_layer=args.first_layer, batch_size=4,
                         epochs=1.0, warmup_steps=2, threads=1, max_steps=args.steps,
                         checkpoint_every=10**6)  # fmt: skip
    inter = interleaved(model_path, examples, config, args.steps)
    print(json.dumps(inter))
    with tempfile.TemporaryDirectory() as tmp:
        e2e = end_to_end(model_path, examples, config, Path(tmp))
    print(json.dumps(e2e))
    result = {
        "setup": {"model": "SmolLM2-135M-Instruct Q4_1 GGUF -> float32 (transformers)",
                  "threads": 1, "examples": len(examples), "batch_size": 4, "rank": 16,
                  "first_layer": args.first_layer, "steps": args.steps},
        "interleaved": inter, "end_to_end": e2e,
        "whole_split": _whole_split(inter, n_split, mean_len, len(examples), examples),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _whole_split(inter: dict[str, Any], n_split: int, mean_len: float, n: int,
                 examples: list[Example]) -> dict[str, Any]:  # fmt: skip
    """One epoch of the whole train split at batch 4, scaled by tokens from the subset."""
    scale = n_split * mean_len / sum(len(e.input_ids) for e in examples)
    steps_subset = n / 4
    cpu = inter["median_cpu_s_per_step"]
    return {
        "examples": n_split, "mean_tokens": round(mean_len, 1),
        "epoch_cpu_min_uncached": round(cpu["uncached"] * steps_subset * scale / 60, 1),
        "epoch_cpu_min_cached": round(cpu["cached"] * steps_subset * scale / 60, 1),
        "cache_build_cpu_min": round(inter["cache_build"]["cpu_s"] * scale / 60, 2),
        "cache_mb": round(inter["cache_build"]["mb"] * scale, 1),
    }  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
