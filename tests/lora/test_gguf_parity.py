"""A LoRA exported for llama.cpp changes the logits exactly as peft's changes torch's.

The tiny llama exists twice from the same numpy weights: as a GGUF run by llama.cpp and as a
transformers model. The same peft adapter is applied to each (exported to GGUF for llama.cpp,
loaded by peft for torch); the per-position change in logits must agree.
"""

from __future__ import annotations

import ctypes
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest
import torch

from edge_agent.errors import AdapterMismatchError, InvalidAdapterError
from edge_agent.lora import (
    adapter_identity,
    export_lora_gguf,
    load_peft_adapter,
    require_same_base,
)
from edge_agent.models.gguf import BaseModelIdentity, read_header
from tests.tinymodel import TinyLora, TinyModel

PROMPT = (
    b'<|im_start|>user\nthe cat sat on the mat, and then the dog ran to it {"a": 1}'
    b"<|im_end|>\n<|im_start|>assistant\n"
)


class LlamaRunner:
    """One llama.cpp context over the tiny model; adapters are swapped at runtime."""

    def __init__(self, model_path: Path) -> None:
        self.llm = llama_cpp.Llama(
            str(model_path), logits_all=True, n_ctx=128, n_threads=2, verbose=False
        )

    def tokens(self, text: bytes) -> list[int]:
        return self.llm.tokenize(text, add_bos=False, special=True)

    def logits(self, tokens: list[int], adapter: Path | None = None) -> np.ndarray:
        self._set_adapter(adapter)
        self.llm.reset()
        self.llm.eval(tokens)
        return np.array(self.llm.scores[: len(tokens)], dtype=np.float64)

    def load_adapter(self, path: Path) -> Any:  # a ctypes handle, None if refused
        return llama_cpp.llama_adapter_lora_init(self.llm.model, str(path).encode())

    def _set_adapter(self, path: Path | None) -> None:
        if path is None:
            rc = llama_cpp.llama_set_adapters_lora(self.llm.ctx, None, 0, None)
        else:
            handle = self.load_adapter(path)
            assert handle, f"llama.cpp refused the adapter {path}"
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
            rc = llama_cpp.llama_set_adapters_lora(
                self.llm.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)
            )
        assert rc == 0


@pytest.fixture(scope="module")
def runner(tiny_model: TinyModel) -> Iterator[LlamaRunner]:
    runner = LlamaRunner(tiny_model.gguf_path)
    yield runner
    runner.llm.close()


@pytest.fixture(scope="module")
def prompt(runner: LlamaRunner) -> list[int]:
    tokens = runner.tokens(PROMPT)
    assert len(tokens) > 20  # long enough that attention (and so q/k) matters
    return tokens


def _export(
    tiny_lora: TinyLora,
    identity: BaseModelIdentity,
    path: Path,
    *,
    dtype: str = "f32",
    permute: bool = True,
) -> Path:
    return export_lora_gguf(
        tiny_lora.state,
        alpha=tiny_lora.alpha,
        identity=identity,
        path=path,
        dtype=dtype,
        _permute_qk=permute,
    )


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@dataclasses.dataclass
class Parity:
    """Exports the tiny LoRA and scores llama.cpp's logit change against peft's."""

    runner: LlamaRunner
    prompt: list[int]
    lora: TinyLora
    identity: BaseModelIdentity
    torch_delta: np.ndarray

    def correlation(self, path: Path, *, dtype: str = "f32", permute: bool = True) -> float:
        adapter = _export(self.lora, self.identity, path, dtype=dtype, permute=permute)
        with_adapter = self.runner.logits(self.prompt, adapter)
        return _corr(with_adapter - self.runner.logits(self.prompt), self.torch_delta)


@pytest.fixture(scope="module")
def parity(
    runner: LlamaRunner, prompt: list[int], tiny_lora: TinyLora, identity: BaseModelIdentity
) -> Parity:
    return Parity(runner, prompt, tiny_lora, identity, _torch_delta(tiny_lora, prompt))


def _torch_delta(tiny_lora: TinyLora, prompt: list[int]) -> np.ndarray:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        base = tiny_lora.base.torch_model()(ids).logits[0].double().numpy()
        tuned = tiny_lora.torch_model()(ids).logits[0].double().numpy()
    return tuned - base


# --- parity -----------------------------------------------------------------------------------


def test_base_model_logits_match_torch(
    tiny_model: TinyModel, runner: LlamaRunner, prompt: list[int]
) -> None:
    with torch.no_grad():
        expected = tiny_model.torch_model()(torch.tensor([prompt])).logits[0].double().numpy()
    got = runner.logits(prompt)
    assert _corr(got, expected) >= 0.9999
    assert np.abs(got - expected).max() < 1e-2 * np.abs(expected).max()


def test_adapter_changes_logits_like_peft(parity: Parity, tmp_path: Path) -> None:
    assert np.abs(parity.torch_delta).mean() > 0.1  # the adapter really does something
    assert parity.correlation(tmp_path / "lora.gguf") >= 0.999


def test_without_qk_permutation_parity_breaks(parity: Parity, tmp_path: Path) -> None:
    assert parity.correlation(tmp_path / "unpermuted.gguf", permute=False) < 0.99


def test_f16_adapter_keeps_parity(parity: Parity, tmp_path: Path) -> None:
    path = tmp_path / "lora-f16.gguf"
    assert parity.correlation(path, dtype="f16") >= 0.999
    assert {t.type_name for t in read_header(path).tensors} == {"F16"}


# --- identity ---------------------------------------------------------------------------------


def test_adapter_records_its_base(
    tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path: Path
) -> None:
    adapter = _export(tiny_lora, identity, tmp_path / "lora.gguf")
    assert adapter_identity(adapter) == identity
    require_same_base(adapter, identity)


def test_adapter_for_another_base_is_refused_before_llama_cpp(
    tiny_lora: TinyLora, identity: BaseModelIdentity, runner: LlamaRunner, tmp_path: Path
) -> None:
    other = dataclasses.replace(identity, base_name="another-llama")
    adapter = _export(tiny_lora, other, tmp_path / "other.gguf")
    # llama.cpp checks only architecture and shapes, so it would happily load this one...
    assert runner.load_adapter(adapter)
    # ...which is why the identity is compared first.
    with pytest.raises(AdapterMismatchError, match="base_name"):
        require_same_base(adapter, identity)


def test_export_refuses_shapes_of_another_model(
    tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path: Path
) -> None:
    bigger = dataclasses.replace(identity, n_embd=128)
    with pytest.raises(AdapterMismatchError, match="do not fit"):
        _export(tiny_lora, bigger, tmp_path / "x.gguf")


def test_export_refuses_unknown_tensors(
    tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path: Path
) -> None:
    state = dict(tiny_lora.state)
    state["base_model.model.lm_head.lora_A.weight"] = np.zeros((4, 64), np.float32)
    with pytest.raises(InvalidAdapterError, match="lm_head"):
        export_lora_gguf(state, alpha=8.0, identity=identity, path=tmp_path / "x.gguf")
    half = {k: v for k, v in tiny_lora.state.items() if "lora_B" not in k}
    with pytest.raises(InvalidAdapterError, match="only one of"):
        export_lora_gguf(half, alpha=8.0, identity=identity, path=tmp_path / "y.gguf")


def test_model_file_is_not_an_adapter(tiny_model: TinyModel) -> None:
    with pytest.raises(InvalidAdapterError, match="not a LoRA adapter"):
        adapter_identity(tiny_model.gguf_path)


def test_corrupt_adapter_is_invalid_adapter(
    tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path: Path
) -> None:
    adapter = _export(tiny_lora, identity, tmp_path / "lora.gguf")
    adapter.write_bytes(adapter.read_bytes()[:200])
    with pytest.raises(InvalidAdapterError):
        adapter_identity(adapter)


def test_load_peft_adapter_reads_peft_save(tiny_lora: TinyLora) -> None:
    state, alpha, rank = load_peft_adapter(tiny_lora.directory)
    assert (alpha, rank) == (8.0, 4)
    assert len(state) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    assert state[key].shape == (64, 4) and np.abs(state[key]).sum() > 0
