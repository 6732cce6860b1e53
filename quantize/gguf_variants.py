"""GGUF variants: the base as a float GGUF (the gguf package), requantized by llama.cpp.

llama.cpp's quantizer needs a float GGUF to start from; ``write_float_gguf`` writes one from
the base's float32 weights and its GGUF tokenizer, named after the base so the base identity
(and so every adapter) stays the same across quantizations.
"""

from __future__ import annotations

from pathlib import Path

from edge_agent.errors import EdgeAgentError, QuantizeError
from edge_agent.models.requantize import LLAMA_FTYPES, requantize_gguf
from quantize.base import Base
from quantize.gguf_writer import write_llama_gguf

__all__ = ["GGUF_TYPES", "requantize", "write_float_gguf"]

GGUF_TYPES = LLAMA_FTYPES  # variant name -> llama.cpp's LLAMA_FTYPE_* value (llama.h)


def write_float_gguf(base: Base, path: Path, dtype: str = "f32") -> Path:
    """The base's weights as an F32 or F16 llama GGUF."""
    if base.identity.architecture != "llama":
        raise QuantizeError(
            f"GGUF variants are written for llama-architecture models only, not "
            f"{base.identity.architecture!r}; build ONNX variants of this base instead"
        )
    if base.tokenizer is None:
        raise QuantizeError(
            f"{base.hf_dir}: its tokenizer is not a byte-level BPE, which is all this writer "
            "converts; start from a GGUF of the model, or build ONNX variants only"
        )
    config = base.config
    state = base.state()
    if config.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)  # llama.cpp reuses token_embd for a tied head
    try:
        return write_llama_gguf(
            path, config, state, base.tokenizer, dtype=dtype, name=base.identity.base_name
        )
    except EdgeAgentError as exc:
        raise QuantizeError(f"cannot write {path.name}: {exc}") from exc


def requantize(source: Path, path: Path, quantization: str, *, threads: int = 1) -> Path:
    """llama.cpp's own quantizer (``llama_model_quantize``) from a float GGUF."""
    return requantize_gguf(source, path, quantization, threads=threads)
