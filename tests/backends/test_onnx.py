"""The onnx backend beyond the contract (test_contract.py): raw logprobs, canonical JSON,
LoRA adapters against peft, bad model folders, execution providers.

Fast tests run on the tiny random llama (tests/tinymodel.py) built as an fp32 ONNX folder by
the same path `edge-agent quantize` takes (GGUF → transformers → onnxruntime-genai's builder
→ LoRA slots); the `slow` one builds SmolLM2-135M int4.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_agent.backends import open_backend
from edge_agent.backends.onnx import MODEL_INFO, OnnxBackend
from edge_agent.errors import (
    AdapterError,
    AdapterMismatchError,
    BackendError,
    InvalidAdapterError,
    InvalidModelFileError,
    ModelNotFoundError,
)
from edge_agent.lora.gguf import export_lora_gguf
from edge_agent.lora.onnx import onnx_adapter_from_peft, write_onnx_adapter
from edge_agent.models.gguf import BaseModelIdentity, identity_of, read_header
from edge_agent.types import Message
from tests.backends.support import SCHEMA, ask
from tests.tinymodel import TinyLora, TinyModel


def build_tiny_onnx(root: Path, tiny: TinyModel, precision: str = "fp32") -> Path:
    """The tiny model as an ONNX folder, built once per session under ``root``."""
    from quantize.base import prepare_base
    from quantize.onnx_variants import build_onnx

    out = root / f"tiny-onnx-{precision}"
    if not (out / "genai_config.json").is_file():
        base = prepare_base(tiny.gguf_path, root / "tiny-base")
        build_onnx(base, out, precision)
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel) -> Path:
    return build_tiny_onnx(tmp_path_factory.getbasetemp() / "onnx", tiny_model)


@pytest.fixture(scope="module")
def onnx(tiny_onnx: Path) -> OnnxBackend:
    backend = OnnxBackend(tiny_onnx, n_ctx=256, n_threads=1)
    yield backend  # type: ignore[misc]
    backend.close()


@pytest.fixture
def fresh(onnx: OnnxBackend) -> OnnxBackend:
    onnx.use_adapter(None)
    onnx.clear_cache()
    return onnx


@pytest.fixture(scope="module")
def tiny_identity(tiny_model: TinyModel) -> BaseModelIdentity:
    return identity_of(read_header(tiny_model.gguf_path))


# --- loading, logprobs, JSON -----------------------------------------------------------------


def test_registered_and_opened_by_kind(tiny_onnx: Path) -> None:
    with open_backend("onnx", model_path=tiny_onnx, n_ctx=128, n_threads=1) as backend:
        assert isinstance(backend, OnnxBackend)
        assert backend.n_ctx == 128
        assert backend.execution_provider == "cpu"


def test_identity_is_the_gguf_bases(fresh: OnnxBackend, tiny_identity: BaseModelIdentity) -> None:
    assert fresh.identity == tiny_identity


def test_logprobs_are_the_raw_model_ones(fresh: OnnxBackend) -> None:
    request = ask("turn on", max_tokens=6, logprobs=True)
    done = fresh.complete(request)
    prompt = fresh.tokenize_prompt(request.messages)
    logits = fresh.token_logits(prompt + list(done.token_ids))
    for i, (token, logprob) in enumerate(zip(done.token_ids, done.logprobs, strict=True)):
        expected = log_softmax(logits[len(prompt) - 1 + i])[token]
        assert logprob == pytest.approx(expected, abs=1e-4)


def test_json_output_has_canonical_separators(fresh: OnnxBackend) -> None:
    greedy = ask("pick", json_schema=SCHEMA)
    sampled = ask("pick", json_schema=SCHEMA, temperature=1.0, seed=3)
    for request in (greedy, sampled):
        text = fresh.complete(request).text
        assert text == json.dumps(json.loads(text))  # as the flywheel trains on


# --- adapters --------------------------------------------------------------------------------


def test_gguf_adapter_matches_peft(
    fresh: OnnxBackend, tiny_lora: TinyLora, tiny_identity: BaseModelIdentity, tmp_path: Path
) -> None:
    """The llama.cpp adapter file, converted on load (q/k rows un-permuted), gives peft's logits."""
    import torch

    path = export_lora_gguf(
        tiny_lora.state, alpha=tiny_lora.alpha, identity=tiny_identity, path=tmp_path / "a.gguf"
    )
    ids = fresh.tokenize_prompt([Message(role="user", content="turn on the kitchen light")])
    with torch.no_grad():
        want = tiny_lora.torch_model()(torch.tensor([ids])).logits[0].numpy()
        base = tiny_lora.base.torch_model()(torch.tensor([ids])).logits[0].numpy()
    fresh.load_adapter("gguf", path)
    fresh.use_adapter("gguf")
    np.testing.assert_allclose(fresh.token_logits(ids), want, atol=1e-3)
    assert np.abs(want - base).max() > 1.0  # the adapter really changes the logits
    fresh.use_adapter(None)
    np.testing.assert_allclose(fresh.token_logits(ids), base, atol=1e-3)


def test_onnx_adapter_from_peft_matches_the_gguf_one(
    fresh: OnnxBackend, tiny_lora: TinyLora, tiny_identity: BaseModelIdentity, tmp_path: Path
) -> None:
    path = onnx_adapter_from_peft(tiny_lora.directory, tiny_identity, tmp_path / "a.onnx_adapter")
    gguf = export_lora_gguf(
        tiny_lora.state, alpha=tiny_lora.alpha, identity=tiny_identity, path=tmp_path / "a.gguf"
    )
    fresh.load_adapter("from-peft", path)
    fresh.load_adapter("from-gguf", gguf)
    ids = fresh.tokenize_prompt([Message(role="user", content="hello")])
    fresh.use_adapter("from-peft")
    a = fresh.token_logits(ids)
    first = fresh.complete(ask("hello", max_tokens=6))
    fresh.use_adapter("from-gguf")
    np.testing.assert_allclose(fresh.token_logits(ids), a, atol=1e-5)
    assert fresh.complete(ask("hello", max_tokens=6)).text == first.text


def test_missing_and_garbage_adapters_are_refused(fresh: OnnxBackend, tmp_path: Path) -> None:
    with pytest.raises(InvalidAdapterError, match="no such adapter"):
        fresh.load_adapter("x", tmp_path / "nothing.onnx_adapter")
    garbage = tmp_path / "garbage.onnx_adapter"
    garbage.write_bytes(b"not a flatbuffer at all" * 4)
    with pytest.raises(InvalidAdapterError):
        fresh.load_adapter("garbage", garbage)
    assert fresh.active_adapter is None


def test_adapter_for_another_base_is_refused(
    fresh: OnnxBackend, tiny_lora: TinyLora, tiny_identity: BaseModelIdentity, tmp_path: Path
) -> None:
    from dataclasses import replace

    other = replace(tiny_identity, base_name="another-model")
    path = export_lora_gguf(
        tiny_lora.state, alpha=tiny_lora.alpha, identity=other, path=tmp_path / "other.gguf"
    )
    with pytest.raises(AdapterMismatchError, match="another base model"):
        fresh.load_adapter("other", path)


def test_onnx_adapter_with_wrong_shapes_is_refused(fresh: OnnxBackend, tmp_path: Path) -> None:
    bad = {"model.layers.0.self_attn.q_proj.lora_A": np.zeros((65, 2), np.float32)}
    path = write_onnx_adapter(bad, tmp_path / "bad.onnx_adapter")
    with pytest.raises(AdapterMismatchError, match="does not fit"):
        fresh.load_adapter("bad", path)
    unknown = {"model.layers.9.self_attn.q_proj.lora_A": np.zeros((64, 2), np.float32)}
    with pytest.raises(AdapterMismatchError, match="no LoRA slot"):
        fresh.load_adapter("unknown", write_onnx_adapter(unknown, tmp_path / "u.onnx_adapter"))


def test_model_without_slots_refuses_adapters(
    tiny_onnx: Path, tiny_lora: TinyLora, tmp_path: Path
) -> None:
    copy = shutil.copytree(tiny_onnx, tmp_path / "plain")
    (copy / MODEL_INFO).unlink()
    with OnnxBackend(copy, n_ctx=64, n_threads=1) as plain:
        assert plain.identity is None
        with pytest.raises(AdapterError, match="no LoRA slots"):
            plain.load_adapter("x", tiny_lora.directory / "adapter_model.safetensors")


# --- bad input -------------------------------------------------------------------------------


def test_missing_folder_and_missing_genai_config(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        OnnxBackend(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidModelFileError, match="genai_config.json"):
        OnnxBackend(tmp_path / "empty")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(InvalidModelFileError, match="edge-agent quantize"):
        OnnxBackend(tmp_path / "model.gguf")


def test_corrupt_and_truncated_onnx(tiny_onnx: Path, tmp_path: Path) -> None:
    corrupt = shutil.copytree(tiny_onnx, tmp_path / "corrupt")
    (corrupt / "model.onnx").write_bytes(b"\x08garbage" * 100)
    with pytest.raises(InvalidModelFileError, match="corrupt or truncated"):
        OnnxBackend(corrupt)
    truncated = shutil.copytree(tiny_onnx, tmp_path / "truncated")
    data = truncated / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(InvalidModelFileError, match="corrupt or truncated"):
        OnnxBackend(truncated)
    (truncated / "genai_config.json").write_text("{not json")
    with pytest.raises(InvalidModelFileError, match="not a valid"):
        OnnxBackend(truncated)


def test_unsupported_architecture(tiny_onnx: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_onnx, tmp_path / "arch")
    config = json.loads((folder / "genai_config.json").read_text())
    config["model"]["type"] = "frobnet"
    (folder / "genai_config.json").write_text(json.dumps(config))
    with pytest.raises(BackendError, match="cannot run this architecture"):
        OnnxBackend(folder)


def test_missing_provider_falls_back_to_cpu_when_allowed(
    tiny_onnx: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_agent.backends.onnx"):
        backend = OnnxBackend(tiny_onnx, n_ctx=64, execution_provider="cuda", fallback_to_cpu=True)
    with backend:
        if backend.execution_provider == "cuda":
            pytest.skip("this machine has the CUDA build of onnxruntime-genai")
        assert backend.execution_provider == "cpu"
        assert "running on CPU" in caplog.text
        assert backend.complete(ask("hi", max_tokens=2)).usage.completion_tokens >= 1


def test_missing_provider_without_fallback_is_an_error(tiny_onnx: Path) -> None:
    with pytest.raises(BackendError, match="metal execution provider is not usable"):
        OnnxBackend(tiny_onnx, execution_provider="metal", fallback_to_cpu=False)


# --- the real default model ------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_int4_answers_and_calls_with_the_home_adapter(tmp_path: Path) -> None:
    from edge_agent.adapters.shipped import adapter_for
    from edge_agent.models.catalog import load_catalog
    from edge_agent.models.store import ModelStore
    from quantize.base import prepare_base
    from quantize.onnx_variants import build_onnx

    gguf = ModelStore(tmp_path / "models", offline=True).ensure(load_catalog().default())
    folder = build_onnx(prepare_base(gguf, tmp_path), tmp_path / "int4", "int4")
    with OnnxBackend(folder, n_ctx=2048, n_threads=1) as backend:
        answer = backend.complete(ask("What is the capital of France?", max_tokens=24))
        assert "Paris" in answer.text
        shipped = adapter_for("home", backend.identity)
        assert shipped is not None
        backend.load_adapter("home", shipped.verified_path())
        backend.use_adapter("home")
        from edge_agent.skills.home.dataset import load_split
        from edge_agent.skills.home.evaluate import evaluate

        assert evaluate(backend, load_split("test")[:5], adapter="home").report.n == 5
