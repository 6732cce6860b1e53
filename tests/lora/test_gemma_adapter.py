"""Gemma 3 adapters: exported for llama.cpp, they change the logits as peft changes torch's.

Gemma's llama.cpp rope rotates halves, as transformers does, so unlike llama's its q/k rows
are not permuted; its attention output reads n_head x head_dim (wider than the model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_agent.errors import AdapterMismatchError
from edge_agent.lora import adapter_identity, export_lora_gguf, load_peft_adapter
from edge_agent.models.gguf import BaseModelIdentity, identity_of, read_header
from tests.lora.test_gguf_parity import PROMPT, LlamaRunner
from tests.tinygemma import TinyGemma, make_tiny_gemma
from tests.tinymodel import LORA_TARGETS


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> TinyGemma:
    return make_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"))


@pytest.fixture(scope="module")
def identity(gemma: TinyGemma) -> BaseModelIdentity:
    return identity_of(read_header(gemma.gguf_path))


@pytest.fixture(scope="module")
def runner(gemma: TinyGemma) -> Iterator[LlamaRunner]:
    runner = LlamaRunner(gemma.gguf_path)
    yield runner
    runner.llm.close()


@pytest.fixture(scope="module")
def prompt(runner: LlamaRunner) -> list[int]:
    tokens = runner.tokens(PROMPT)
    assert len(tokens) > 20  # past the 8-token window: sliding layers differ from full ones
    return tokens


@pytest.fixture(scope="module")
def lora(
    gemma: TinyGemma, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, torch.nn.Module]:
    """A peft LoRA (rank 4, random A and B) on every projection, and peft's model with it."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(LORA_TARGETS))
    model = get_peft_model(gemma.torch_model(), config)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) / param.shape[1] ** 0.5)
    directory = tmp_path_factory.mktemp("gemma-lora")
    model.save_pretrained(str(directory))
    return Lora(directory, model.eval(), gemma.torch_model())


@dataclasses.dataclass(frozen=True)
class Lora:
    directory: Path
    tuned: torch.nn.Module
    base: torch.nn.Module


def _logits(model: torch.nn.Module, prompt: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([prompt])).logits[0].double().numpy()


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_tiny_gemma_runs_in_llama_cpp_as_in_torch(
    gemma: TinyGemma, runner: LlamaRunner, prompt: list[int]
) -> None:
    expected = _logits(gemma.torch_model(), prompt)
    got = runner.logits(prompt)
    assert _corr(got, expected) >= 0.9999
    assert np.abs(got - expected).max() < 1e-2 * np.abs(expected).max()


def test_gemma_adapter_changes_logits_like_peft(
    runner: LlamaRunner, prompt: list[int], identity: BaseModelIdentity, lora: Lora,
    tmp_path: Path,
) -> None:  # fmt: skip
    state, alpha, _rank = load_peft_adapter(lora.directory)
    path = export_lora_gguf(state, alpha=alpha, identity=identity, path=tmp_path / "g.gguf")
    torch_delta = _logits(lora.tuned, prompt) - _logits(lora.base, prompt)
    assert np.abs(torch_delta).mean() > 0.1  # the adapter really does something
    llama_delta = runner.logits(prompt, path) - runner.logits(prompt)
    assert _corr(llama_delta, torch_delta) >= 0.999
    assert adapter_identity(path) == identity and identity.architecture == "gemma3"


def test_gemma_adapter_shapes_are_still_checked(
    lora: Lora, identity: BaseModelIdentity, tmp_path: Path
) -> None:
    state, alpha, _rank = load_peft_adapter(lora.directory)
    narrower = dataclasses.replace(identity, n_embd=32)
    with pytest.raises(AdapterMismatchError, match="do not fit"):
        export_lora_gguf(state, alpha=alpha, identity=narrower, path=tmp_path / "x.gguf")
