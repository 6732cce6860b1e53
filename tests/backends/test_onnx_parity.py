"""GGUF on llama.cpp and ONNX on onnxruntime-genai compute the same logits for the same model.

One tiny float32 llama (tests/tinymodel.py) is written as a GGUF and, through transformers,
as a Hugging Face folder that onnxruntime-genai's builder turns into an fp32 ONNX model. On
fixed prompts both backends must tokenize alike and give the same logits at every position
(logits, not greedy tokens: tokens flake on near-ties).

Tolerances, with what was measured here: with llama.cpp's KV cache in f32 the largest
absolute logit difference is 2.3e-5 (logits up to ~19); the test allows 1e-3. With the
llama backend's default f16 KV cache it is 0.02; the test allows 0.05 and requires the
same argmax everywhere.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.backends.onnx import OnnxBackend
from edge_agent.lora.gguf import export_lora_gguf
from edge_agent.models.gguf import identity_of, read_header
from edge_agent.types import Message
from tests.backends.test_onnx import build_tiny_onnx
from tests.tinymodel import TinyLora, TinyModel

STRICT_TOLERANCE = 1e-3  # f32 KV cache on both sides
F16_KV_TOLERANCE = 0.05  # llama.cpp's default f16 KV cache
PROMPTS = [
    [Message(role="user", content="turn on the kitchen light")],
    [
        Message(role="system", content="You are a helpful assistant for a smart home."),
        Message(role="user", content='Set {"brightness": 40} in the bedroom, then stop.'),
    ],
    [Message(role="user", content="Ünïcödé, tabs\tand  double  spaces\n\nstill agree?")],
]


@pytest.fixture(scope="module")
def onnx(tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel) -> OnnxBackend:
    folder = build_tiny_onnx(tmp_path_factory.getbasetemp() / "onnx", tiny_model)
    backend = OnnxBackend(folder, n_ctx=256, n_threads=1)
    yield backend  # type: ignore[misc]
    backend.close()


def llama_logits(backend: LlamaCppBackend, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits after each prefix of ``ids``, one token evaluated at a time."""
    backend.clear_cache()
    llm = backend._llama
    rows = []
    for token in ids:
        llm.eval([token])
        raw = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        rows.append(np.ctypeslib.as_array(raw, shape=(llm.n_vocab(),)).copy())
    backend.clear_cache()
    return np.stack(rows)


@pytest.mark.parametrize(
    ("kv_cache_type", "tolerance"), [("f32", STRICT_TOLERANCE), ("f16", F16_KV_TOLERANCE)]
)
def test_logits_agree_on_fixed_prompts(
    onnx: OnnxBackend, tiny_model: TinyModel, kv_cache_type: str, tolerance: float
) -> None:
    with LlamaCppBackend(
        tiny_model.gguf_path, n_ctx=256, n_threads=1, kv_cache_type=kv_cache_type
    ) as llama:
        for messages in PROMPTS:
            ids = llama.tokenize_prompt(messages)
            assert onnx.tokenize_prompt(messages) == ids
            ours, theirs = onnx.token_logits(ids), llama_logits(llama, ids)
            assert np.abs(ours - theirs).max() <= tolerance
            assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()


def test_logits_agree_with_the_same_adapter(
    onnx: OnnxBackend, tiny_model: TinyModel, tiny_lora: TinyLora, tmp_path: Path
) -> None:
    """One GGUF adapter file on both backends: llama.cpp applies it natively, onnx converts it."""
    identity = identity_of(read_header(tiny_model.gguf_path))
    adapter = export_lora_gguf(
        tiny_lora.state, alpha=tiny_lora.alpha, identity=identity, path=tmp_path / "lora.gguf"
    )
    with LlamaCppBackend(
        tiny_model.gguf_path, n_ctx=256, n_threads=1, kv_cache_type="f32"
    ) as llama:
        llama.load_adapter("lora", adapter)
        llama.use_adapter("lora")
        onnx.load_adapter("parity-lora", adapter)
        onnx.use_adapter("parity-lora")
        try:
            ids = llama.tokenize_prompt(PROMPTS[0])
            ours, theirs = onnx.token_logits(ids), llama_logits(llama, ids)
        finally:
            onnx.use_adapter(None)
    assert np.abs(ours - theirs).max() <= STRICT_TOLERANCE
    assert np.abs(ours - onnx.token_logits(ids)).max() > 1.0  # the adapter is really on


def test_first_token_logprob_agrees(onnx: OnnxBackend, tiny_model: TinyModel) -> None:
    """What generate() reports: the chosen first token's log-probability (same prompt, same
    logits, so the same greedy choice and value)."""
    from edge_agent.backends import GenerationRequest

    request = GenerationRequest(messages=PROMPTS[1], max_tokens=1, logprobs=True)
    with LlamaCppBackend(
        tiny_model.gguf_path, n_ctx=256, n_threads=1, kv_cache_type="f32"
    ) as llama:
        theirs = llama.complete(request)
    ours = onnx.complete(request)
    assert ours.token_ids == theirs.token_ids
    assert ours.logprobs[0] == pytest.approx(theirs.logprobs[0], abs=STRICT_TOLERANCE)
