"""Fine-tuning a Gemma 3 base (the tiny one): load from GGUF, the frozen-prefix cache across
sliding-window and full layers, export, and the adapter in llama.cpp."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from edge_agent.backends.base import GenerationRequest
from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.host.curate import Record
from edge_agent.host.examples import Example, Tokenizer, build_examples
from edge_agent.host.finetune import TrainConfig, batch_loss, collate, finetune, load_base
from edge_agent.host.pipeline import export_adapter
from edge_agent.host.prefix_cache import PrefixCache
from edge_agent.lora.gguf import adapter_identity
from edge_agent.skills.home.toolset import home_toolset
from edge_agent.types import Message, ToolCall
from tests.tinygemma import WINDOW, TinyGemma, make_tiny_gemma

CONFIG = TrainConfig(rank=2, alpha=4, batch_size=2, epochs=1, warmup_steps=1, threads=1,
                     checkpoint_every=1, learning_rate=1e-2)  # fmt: skip


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> TinyGemma:
    return make_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"))


@pytest.fixture(scope="module")
def uneven(gemma: TinyGemma) -> list[Example]:
    """Examples of different lengths, all longer than the sliding window."""
    records = [
        Record(id=f"u{i}", request="turn on the light" + " please" * (3 * i),
               context="Speaker area: Office",
               call=ToolCall(name="HassTurnOn", arguments={"name": "lamp " * (i + 1)}))
        for i in range(6)
    ]  # fmt: skip
    tokenizer = Tokenizer(gemma.gguf_path)
    try:
        return build_examples(records, home_toolset(), tokenizer)
    finally:
        tokenizer.close()


def test_gemma_base_loads_from_its_gguf_with_the_torch_weights(gemma: TinyGemma) -> None:
    ids = torch.tensor([list(range(3, 40))])
    with torch.no_grad():
        loaded = load_base(gemma.gguf_path).eval()(ids).logits
        expected = gemma.torch_model()(ids).logits
    assert torch.allclose(loaded, expected, atol=1e-5)


def _lora_on_top(gemma: TinyGemma, start: int) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "o_proj", "down_proj"],
                      layers_to_transform=list(range(start, 6)), task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(load_base(gemma.gguf_path), lora)
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


@pytest.mark.parametrize("start", [2, 5])  # below: sliding layers only / the full layer too
def test_cached_prefix_gives_the_uncached_loss_and_gradients_on_gemma(
    gemma: TinyGemma, uneven: list[Example], start: int
) -> None:
    model = _lora_on_top(gemma, start)
    cache = PrefixCache.build(model.get_base_model().model, uneven, start=start)
    rows = [5, 0, 3, 1]
    batch = collate([uneven[i] for i in rows], pad_id=1)
    assert (batch["attention_mask"] == 0).any() and batch["input_ids"].shape[1] > 2 * WINDOW
    plain, plain_grads = _loss_and_grads(model, batch)
    batch["states"] = cache.batch(rows, batch["input_ids"].shape[1])
    cached, cached_grads = _loss_and_grads(model, batch, cache)
    assert plain.item() > 0 and torch.allclose(plain, cached, rtol=1e-5, atol=1e-6)
    assert plain_grads.keys() == cached_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(grad, cached_grads[name], rtol=1e-4, atol=1e-6), name


def test_trained_gemma_adapter_is_tagged_with_its_base_and_runs_in_llama_cpp(
    gemma: TinyGemma, uneven: list[Example], tmp_path: Path
) -> None:
    config = TrainConfig(**CONFIG.to_dict() | {"max_steps": 2, "first_layer": 3})
    trained = finetune(gemma.gguf_path, uneven, tmp_path / "t", config=config,
                       validation=uneven[:2], pad_id=1, progress=False)  # fmt: skip
    gguf = export_adapter(trained.adapter_dir, gemma.gguf_path, tmp_path / "a.gguf")
    with LlamaCppBackend(gemma.gguf_path, n_ctx=256, n_threads=1) as backend:
        assert adapter_identity(gguf) == backend.identity
        backend.load_adapter("home", gguf)
        backend.use_adapter("home")
        request = GenerationRequest(messages=[Message(role="user", content="hi")], max_tokens=4)
        assert backend.complete(request).usage.completion_tokens >= 1
