"""Fine-tuning on the tiny GGUF: a few steps, resume, export, load in llama.cpp."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.backends.base import GenerationRequest
from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.host.curate import Record
from edge_agent.host.examples import Example, Tokenizer, build_examples
from edge_agent.host.finetune import (
    CHECKPOINT,
    PREFIX_CACHE,
    TrainConfig,
    batch_loss,
    collate,
    finetune,
    load_base,
    lr_at,
    make_batches,
)
from edge_agent.host.pipeline import export_adapter
from edge_agent.host.prefix_cache import PrefixCache, fingerprint
from edge_agent.lora.gguf import load_peft_adapter
from edge_agent.skills.home.toolset import home_toolset
from edge_agent.types import Message, ToolCall
from tests.tinymodel import TinyModel

CONFIG = TrainConfig(rank=2, alpha=4, batch_size=2, epochs=1, warmup_steps=1, threads=1,
                     checkpoint_every=1, learning_rate=1e-2)  # fmt: skip


@pytest.fixture(scope="module")
def examples(tiny_model: TinyModel) -> list[Example]:
    records = [
        Record(id=f"r{i}", request=f"turn on light {i}", context="Speaker area: Office",
               call=ToolCall(name="HassTurnOn", arguments={"name": f"light {i}"}))
        for i in range(8)
    ]  # fmt: skip
    return _tokenized(tiny_model, records)


@pytest.fixture(scope="module")
def uneven(tiny_model: TinyModel) -> list[Example]:
    """Examples of different lengths, so batches are right-padded."""
    records = [
        Record(id=f"u{i}", request="turn on the light" + " please" * (3 * i),
               context="Speaker area: Office",
               call=ToolCall(name="HassTurnOn", arguments={"name": "lamp " * (i + 1)}))
        for i in range(6)
    ]  # fmt: skip
    return _tokenized(tiny_model, records)


def _tokenized(tiny_model: TinyModel, records: list[Record]) -> list[Example]:
    tokenizer = Tokenizer(tiny_model.gguf_path)
    try:
        return build_examples(records, home_toolset(), tokenizer)
    finally:
        tokenizer.close()


def weights(directory: Path) -> dict[str, np.ndarray]:
    return load_peft_adapter(directory)[0]


def test_batches_are_deterministic_and_cover_every_example(examples: list[Example]) -> None:
    batches = make_batches(examples, 3, seed=5)
    assert batches == make_batches(examples, 3, seed=5)
    assert sorted(i for b in batches for i in b) == list(range(len(examples)))


def test_resumed_run_ends_where_an_uninterrupted_one_does(
    tiny_model: TinyModel, examples: list[Example], tmp_path: Path
) -> None:
    straight = finetune(tiny_model.gguf_path, examples, tmp_path / "a", progress=False,
                        config=TrainConfig(**CONFIG.to_dict() | {"max_steps": 4}))  # fmt: skip
    first = finetune(tiny_model.gguf_path, examples, tmp_path / "b", progress=False,
                     config=TrainConfig(**CONFIG.to_dict() | {"max_steps": 2}))  # fmt: skip
    assert first.steps == 2 and (tmp_path / "b" / CHECKPOINT / "trainer.pt").exists()
    resumed = finetune(tiny_model.gguf_path, examples, tmp_path / "b", progress=False,
                       config=TrainConfig(**CONFIG.to_dict() | {"max_steps": 4}))  # fmt: skip
    assert resumed.steps == straight.steps == 4 and resumed.tokens == straight.tokens
    a, b = weights(straight.adapter_dir), weights(resumed.adapter_dir)
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(np.abs(v).max() > 0 for k, v in a.items() if "lora_B" in k)  # it learned


def test_exported_adapter_loads_and_runs_in_llama_cpp(
    tiny_model: TinyModel, examples: list[Example], tmp_path: Path
) -> None:
    config = TrainConfig(**CONFIG.to_dict() | {"max_steps": 1, "first_layer": 1})
    trained = finetune(tiny_model.gguf_path, examples, tmp_path / "t", config=config,
                       validation=examples[:2], progress=False)  # fmt: skip
    assert len(trained.validation_loss) == 1
    assert all(".layers.1." in k for k in weights(trained.adapter_dir))  # top layer only
    gguf = export_adapter(trained.adapter_dir, tiny_model.gguf_path, tmp_path / "a.gguf")
    with LlamaCppBackend(tiny_model.gguf_path, n_ctx=256, n_threads=1) as backend:
        backend.load_adapter("home", gguf)
        backend.use_adapter("home")
        request = GenerationRequest(messages=[Message(role="user", content="hi")], max_tokens=4)
        assert backend.complete(request).usage.completion_tokens >= 1


def test_schedule_restarts_each_epoch_so_extending_a_run_changes_nothing_before() -> None:
    config = TrainConfig(warmup_steps=2, learning_rate=1.0)
    one = [lr_at(s, 10, 10, config) for s in range(10)]
    two = [lr_at(s, 20, 10, config) for s in range(20)]
    assert two[:10] == one and one[0] == 0.5 and two[10] == 1.0 and two[19] < 0.2


# --- the frozen-prefix cache -----------------------------------------------------------------


def _lora_on_top(tiny_model: TinyModel) -> Any:
    """The tiny base with a LoRA on layer 1 only, B made non-zero so every LoRA weight has
    a gradient."""
    import torch
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"],
                      layers_to_transform=[1], task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(load_base(tiny_model.gguf_path), lora)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return model.train()


def _loss_and_grads(model: Any, batch: dict[str, Any], prefix: Any = None) -> tuple[Any, dict]:
    model.zero_grad(set_to_none=True)
    loss = batch_loss(model, batch, prefix)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def test_cached_prefix_gives_the_uncached_loss_and_lora_gradients(
    tiny_model: TinyModel, uneven: list[Example]
) -> None:
    import torch

    model = _lora_on_top(tiny_model)
    cache = PrefixCache.build(model.get_base_model().model, uneven, start=1)
    rows = [5, 0, 3, 1]  # the longest first: every other row is right-padded
    batch = collate([uneven[i] for i in rows], pad_id=0)
    assert (batch["attention_mask"] == 0).any()
    plain, plain_grads = _loss_and_grads(model, batch)
    batch["states"] = cache.batch(rows, batch["input_ids"].shape[1])
    cached, cached_grads = _loss_and_grads(model, batch, cache)
    assert plain.item() > 0 and torch.allclose(plain, cached, rtol=1e-5, atol=1e-6)
    assert plain_grads.keys() == cached_grads.keys() and len(plain_grads) == 6
    for name, grad in plain_grads.items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(grad, cached_grads[name], rtol=1e-4, atol=1e-6), name


def test_cache_is_saved_and_reloaded_only_for_the_same_inputs(
    tiny_model: TinyModel, uneven: list[Example], tmp_path: Path
) -> None:
    import torch

    model = _lora_on_top(tiny_model)
    cache = PrefixCache.build(model.get_base_model().model, uneven, start=1)
    key = fingerprint(tiny_model.gguf_path, 1, "float32", uneven)
    cache.save(tmp_path / "c.safetensors", key)
    again = PrefixCache.load(tmp_path / "c.safetensors", key)
    assert again is not None and again.start == 1
    assert all(torch.equal(a, b) for a, b in zip(cache.states, again.states, strict=True))
    assert [s.shape[0] for s in again.states] == [len(e.input_ids) for e in uneven]
    other = fingerprint(tiny_model.gguf_path, 1, "float32", uneven[:-1])
    assert PrefixCache.load(tmp_path / "c.safetensors", other) is None


def test_training_with_the_cache_ends_where_training_without_it_does(
    tiny_model: TinyModel, uneven: list[Example], tmp_path: Path
) -> None:
    top = CONFIG.to_dict() | {"first_layer": 1, "max_steps": 3}
    plain = finetune(tiny_model.gguf_path, uneven, tmp_path / "plain", progress=False,
                     config=TrainConfig(**top | {"prefix_cache": False}))  # fmt: skip
    cached = finetune(tiny_model.gguf_path, uneven, tmp_path / "cached", progress=False,
                      config=TrainConfig(**top))  # fmt: skip
    assert plain.cache_seconds == 0 and cached.cache_seconds > 0
    assert (tmp_path / "cached" / f"train.{PREFIX_CACHE}").exists()
    a, b = weights(plain.adapter_dir), weights(cached.adapter_dir)
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_resumed_cached_run_reloads_the_cache_and_ends_where_a_straight_one_does(
    tiny_model: TinyModel, uneven: list[Example], tmp_path: Path
) -> None:
    def run(out: str, steps: int) -> Any:
        config = TrainConfig(
            **CONFIG.to_dict() | {"first_layer": 1, "max_steps": steps, "epochs": 2}
        )
        return finetune(tiny_model.gguf_path, uneven, tmp_path / out, progress=False,
                        validation=uneven[:2], config=config)  # fmt: skip

    straight = run("a", 4)
    run("b", 2)
    cache_file = tmp_path / "b" / f"train.{PREFIX_CACHE}"
    built = cache_file.stat().st_mtime_ns
    resumed = run("b", 4)
    assert cache_file.stat().st_mtime_ns == built  # reloaded, not rebuilt
    assert resumed.steps == straight.steps == 4
    assert resumed.validation_loss[-2:] == pytest.approx(straight.validation_loss[-2:], rel=1e-5)
    a, b = weights(straight.adapter_dir), weights(resumed.adapter_dir)
    assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a)
