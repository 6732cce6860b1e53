"""LoRA fine-tuning on the base model loaded from the same GGUF the devices run.

transformers dequantizes the GGUF (Q4_1 for the default model), so the adapter learns on the
weights llama.cpp will apply it to. The loop is plain torch rather than `Trainer`: it batches
by length to waste little on padding, computes logits only where there are labels (the
vocabulary projection is a large share of a 135M model's cost), runs the frozen layers below
the first LoRA layer once per example instead of at every step (`prefix_cache`), and
checkpoints the adapter, the optimizer and the step so an interrupted run resumes where it
stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.host.examples import IGNORE, Example
from edge_agent.host.prefix_cache import PrefixCache, fingerprint, top_hidden

if TYPE_CHECKING:
    import torch

ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CHECKPOINT = "checkpoint"
BEST = "adapter"
PREFIX_CACHE = "prefix_cache.safetensors"


@dataclass
class TrainConfig:
    """CPU-feasible defaults for a ~135M base on two cores (see flywheel.md for the sweep)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ALL_TARGETS
    # LoRA on the top layers only: backward then stops there, the main cost on a CPU
    first_layer: int = 0
    learning_rate: float = 1e-3
    epochs: float = 2.0
    batch_size: int = 8
    warmup_steps: int = 10
    weight_decay: float = 0.0
    seed: int = 0
    # one core left free: on the 2-core host, 2 threads next to any other job ran 5x slower
    threads: int = field(default_factory=lambda: max(1, (os.cpu_count() or 2) - 1))
    checkpoint_every: int = 25  # steps
    max_steps: int | None = None  # stop early (tests, smoke runs)
    # run the frozen layers below first_layer once per example, not at every step
    prefix_cache: bool = True
    cache_dtype: str = "float32"  # "bfloat16" halves the cache's memory, inexactly

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"target_modules": list(self.target_modules)}


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    seconds: float
    tokens: int  # input tokens processed (prompt + answer, no padding)
    train_loss: float
    validation_loss: list[float] = field(default_factory=list)  # after each epoch
    cache_seconds: float = 0.0  # building (or loading) the frozen-prefix cache, once

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def load_base(model_path: str | Path) -> Any:
    """The base model, dequantized from the GGUF to float32 by transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(model_path)
    return AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )


def lora_model(model_path: str | Path, config: TrainConfig) -> tuple[Any, int]:
    """The base with a fresh LoRA (peft), and the first layer the LoRA changes."""
    from peft import LoraConfig, get_peft_model

    base = load_base(model_path)
    n_layers = int(base.config.num_hidden_layers)
    start = min(config.first_layer, n_layers - 1)
    lora = LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules=list(config.target_modules), task_type="CAUSAL_LM",
        layers_to_transform=list(range(start, n_layers)),
    )  # fmt: skip
    return get_peft_model(base, lora), start


def make_batches(examples: Sequence[Example], batch_size: int, seed: int) -> list[list[int]]:
    """Indices per batch for one epoch: shuffled, then grouped by length within chunks so a
    batch pads little, then the batches shuffled."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    chunk = batch_size * 16
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(examples[i].input_ids))
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, mask and labels; positions then match the device's (no left pad)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batch_loss(
    model: Any, batch: dict[str, torch.Tensor], prefix: PrefixCache | None = None
) -> torch.Tensor:
    """Mean cross-entropy over answer tokens; logits only where a label follows. With a
    `prefix` cache, `batch["states"]` holds the cached states entering its first layer."""
    import torch

    causal = model.get_base_model()
    if prefix is not None:
        hidden = top_hidden(causal.model, batch["states"], batch["attention_mask"], prefix.start)
    else:
        hidden = causal.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
    targets = batch["labels"][:, 1:]
    where = targets != IGNORE
    logits = causal.lm_head(hidden[:, :-1][where])
    return torch.nn.functional.cross_entropy(logits.float(), targets[where])


def finetune(
    model_path: str | Path,
    train: Sequence[Example],
    out_dir: str | Path,
    *,
    config: TrainConfig | None = None,
    validation: Sequence[Example] = (),
    pad_id: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train a LoRA on `train`; resume from `out_dir`'s checkpoint if there is one. Returns the
    adapter with the lowest validation loss (the last one without validation examples)."""
    config = config or TrainConfig()
    loop = _Loop(
        model_path, train, Path(out_dir), config=config, validation=validation, pad_id=pad_id
    )
    return loop.run(progress=progress)


def lr_at(step: int, total: int, per_epoch: int, config: TrainConfig) -> float:
    """Linear warmup, then a cosine to a tenth within each epoch (warm restarts). Per epoch,
    so a run extended by resuming with more epochs lands where the longer run would have."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    epoch = step // per_epoch
    start = epoch * per_epoch + (config.warmup_steps if epoch == 0 else 0)
    end = min((epoch + 1) * per_epoch, total)
    done = (step - start) / max(1, end - start)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))


def total_steps(n_examples: int, config: TrainConfig) -> int:
    per_epoch = math.ceil(n_examples / config.batch_size)
    steps = math.ceil(per_epoch * config.epochs)
    return min(steps, config.max_steps) if config.max_steps else steps


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def now() -> float:
    return time.perf_counter()


def save_adapter(model: Any, directory: Path) -> Path:
    """A peft-format save (adapter_config.json + adapter_model.safetensors), written without
    `save_pretrained`, which wants to re-save the GGUF-loaded base model's config."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().contiguous()
        for k, v in get_peft_model_state_dict(model, save_embedding_layers=False).items()
    }
    save_file(state, str(directory / "adapter_model.safetensors"))
    model.peft_config["default"].save_pretrained(str(directory))
    return directory


def _replace_dir(tmp: Path, final: Path) -> None:
    import shutil

    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


class _Loop:
    """One training run's state; a class so each phase is a small method."""

    def __init__(
        self,
        model_path: str | Path,
        train: Sequence[Example],
        out: Path,
        *,
        config: TrainConfig,
        validation: Sequence[Example],
        pad_id: int,
    ) -> None:
        import torch

        torch.manual_seed(config.seed)
        torch.set_num_threads(config.threads)
        self.config, self.train, self.validation = config, train, validation
        self.out, self.pad_id, self.model_path = out, pad_id, model_path
        self.model, self.start = lora_model(model_path, config)
        self.prefix: dict[str, PrefixCache] = {}  # "train" / "validation" -> cached states
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate,
                                           weight_decay=config.weight_decay)  # fmt: skip
        self.total = total_steps(len(train), config)
        self.per_epoch = math.ceil(len(train) / config.batch_size)
        self.state: dict[str, Any] = {"step": 0, "tokens": 0, "seconds": 0.0, "losses": [],
                                      "validation": [], "best": None,
                                      "cache_seconds": 0.0}  # fmt: skip

    def run(self, *, progress: bool) -> TrainResult:
        self.out.mkdir(parents=True, exist_ok=True)
        self._resume()
        self._prepare_cache()
        with _progress(progress, self.total, self.state["step"]) as advance:
            while self.state["step"] < self.total:
                self._step()
                advance(self.state["losses"][-1])
                self._after_step()
        return self._result()

    def _prepare_cache(self) -> None:
        """Build (or reload) the frozen-prefix cache; none when LoRA starts at layer 0."""
        if not (self.config.prefix_cache and self.start > 0):
            return
        started = now()
        for name, examples in (("train", self.train), ("validation", self.validation)):
            if examples:
                self.prefix[name] = self._cache_for(name, examples)
        self.state["cache_seconds"] = self.state.get("cache_seconds", 0.0) + now() - started

    def _cache_for(self, name: str, examples: Sequence[Example]) -> PrefixCache:
        path = self.out / f"{name}.{PREFIX_CACHE}"
        key = fingerprint(self.model_path, self.start, self.config.cache_dtype, examples)
        cache = PrefixCache.load(path, key)
        if cache is None:
            decoder = self.model.get_base_model().model
            cache = PrefixCache.build(decoder, examples, self.start, dtype=self.config.cache_dtype)
            cache.save(path, key)
        return cache

    def _collate(self, name: str, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        examples = self.train if name == "train" else self.validation
        batch = collate([examples[i] for i in indices], self.pad_id)
        if name in self.prefix:
            batch["states"] = self.prefix[name].batch(indices, batch["input_ids"].shape[1])
        return batch

    def _batch(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.per_epoch)
        return make_batches(self.train, self.config.batch_size, self.config.seed + epoch)[index]

    def _step(self) -> None:
        started = now()
        step = self.state["step"]
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, self.total, self.per_epoch, self.config)
        indices = self._batch(step)
        self.model.train()
        loss = batch_loss(self.model, self._collate("train", indices), self.prefix.get("train"))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state["losses"].append(float(loss.detach()))
        self.state["tokens"] += sum(len(self.train[i].input_ids) for i in indices)
        self.state["seconds"] += now() - started
        self.state["step"] = step + 1

    def _after_step(self) -> None:
        step = self.state["step"]
        if step % self.per_epoch == 0 or step == self.total:
            self._validate()
        if step % self.config.checkpoint_every == 0 or step == self.total:
            self._checkpoint()

    def _validate(self) -> None:
        """Keep the adapter with the lowest validation loss (early stopping by selection)."""
        loss = self.validation_loss()
        self.state["validation"].append(loss)
        best = self.state["best"]
        if best is None or loss <= best:
            self.state["best"] = loss
            save_adapter(self.model, self.out / BEST)

    def validation_loss(self) -> float:
        import torch

        if not self.validation:
            return 0.0
        self.model.eval()
        total, weight = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(self.validation), 16):
                part = range(start, min(start + 16, len(self.validation)))
                n = sum(self.validation[i].n_target for i in part)
                batch = self._collate("validation", part)
                total += float(batch_loss(self.model, batch, self.prefix.get("validation"))) * n
                weight += n
        return total / max(1, weight)

    def _checkpoint(self) -> None:
        import torch

        tmp = self.out / (CHECKPOINT + ".tmp")
        save_adapter(self.model, tmp)
        torch.save({"optimizer": self.optimizer.state_dict(), "state": self.state,
                    "rng": torch.get_rng_state()}, tmp / "trainer.pt")  # fmt: skip
        _replace_dir(tmp, self.out / CHECKPOINT)

    def _resume(self) -> None:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        directory = self.out / CHECKPOINT
        if not (directory / "trainer.pt").exists():
            return
        saved = torch.load(directory / "trainer.pt", weights_only=False)
        set_peft_model_state_dict(self.model, load_file(directory / "adapter_model.safetensors"))
        self.optimizer.load_state_dict(saved["optimizer"])
        self.state = saved["state"]
        torch.set_rng_state(saved["rng"])

    def _result(self) -> TrainResult:
        best = self.out / BEST
        if not best.exists():
            save_adapter(self.model, best)
        losses = self.state["losses"][-self.per_epoch :]
        write_json(self.out / "training.json", self.config.to_dict() | {
            k: v for k, v in self.state.items() if k != "losses"} | {"losses": losses})  # fmt: skip
        return TrainResult(
            adapter_dir=best, steps=self.state["step"], seconds=self.state["seconds"],
            tokens=self.state["tokens"], train_loss=sum(losses) / max(1, len(losses)),
            validation_loss=list(self.state["validation"]),
            cache_seconds=self.state.get("cache_seconds", 0.0),
        )  # fmt: skip


@contextlib.contextmanager
def _progress(show: bool, total: int, done: int) -> Iterator[Callable[[float], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, initial=done, disable=not show, desc="train", unit="step")

    def advance(loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)

    try:
        yield advance
    finally:
        bar.close()
