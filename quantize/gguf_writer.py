"""Write a llama-architecture GGUF (F32 or F16) from Hugging Face-style weights.

Used to build the tiny test models and to re-write a dequantized model after fine-tuning. The
tokenizer travels as raw `tokenizer.*` metadata: either a small synthetic byte-level BPE
vocabulary (tests) or one copied verbatim from an existing GGUF.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType, TokenType

from edge_agent.errors import InvalidModelFileError
from edge_agent.lora.layout import gguf_tensor_name, rope_heads, rope_permute
from edge_agent.models.gguf import read_header

__all__ = [
    "CHATML_TEMPLATE",
    "MetadataField",
    "TokenizerSpec",
    "tiny_bpe_tokenizer",
    "tokenizer_from_gguf",
    "write_llama_gguf",
]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Byte-level BPE merges for the tiny vocabulary, in GPT-2's byte alphabet ("Ġ" is a space).
# llama.cpp refuses a BPE vocabulary without merges; these make common English pieces.
_TINY_MERGES = (
    "Ġ t", "h e", "i n", "Ġ a", "r e", "o n", "Ġt he", "e r", "Ġ s", "a t", "e n", "Ġ o",
    "Ġ w", "o r", "e s", "a n", "Ġ c", "i s", "i t", "in g", "Ġ b", "Ġ f", "Ġ p", "o u",
    "a l", "Ġ m", "l e", "Ġ d", "a r", "Ġ h", "e d", "Ġ i", "Ġ l", "Ġ n", "o m", "Ġ {",
    '" :', "Ġ \"", "Ġt o", "l l",
)  # fmt: skip


@dataclass(frozen=True)
class MetadataField:
    """One GGUF key's value with its exact on-disk type (arrays also name their element type)."""

    value: Any
    vtype: GGUFValueType
    sub_type: GGUFValueType | None = None


@dataclass(frozen=True)
class TokenizerSpec:
    """Every `tokenizer.*` key a GGUF needs for llama.cpp to tokenize and to format chats."""

    fields: dict[str, MetadataField]

    @property
    def n_vocab(self) -> int:
        return len(self.fields["tokenizer.ggml.tokens"].value)

    def token_id(self, text: str) -> int:
        return list(self.fields["tokenizer.ggml.tokens"].value).index(text)


def byte_alphabet() -> list[str]:
    """GPT-2's byte-level alphabet, one visible character per byte value.

    Printable Latin-1 bytes stand for themselves; the rest are moved to code points from 256 up,
    in byte order. llama.cpp maps bytes the same way, so these tokens cover every input.
    """
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def tiny_bpe_tokenizer() -> TokenizerSpec:
    """A ~300-token byte-level BPE vocabulary with ChatML control tokens, for test models."""
    tokens = byte_alphabet() + [m.replace(" ", "") for m in _TINY_MERGES]
    types = [TokenType.NORMAL] * len(tokens) + [TokenType.CONTROL] * len(SPECIAL_TOKENS)
    tokens += SPECIAL_TOKENS
    ids = {t: i for i, t in enumerate(tokens)}
    u32, string, array = GGUFValueType.UINT32, GGUFValueType.STRING, GGUFValueType.ARRAY
    return TokenizerSpec(
        {
            "tokenizer.ggml.model": MetadataField("gpt2", string),
            "tokenizer.ggml.pre": MetadataField("gpt-2", string),
            "tokenizer.ggml.tokens": MetadataField(tokens, array, string),
            "tokenizer.ggml.token_type": MetadataField(
                [int(t) for t in types], array, GGUFValueType.INT32
            ),
            "tokenizer.ggml.merges": MetadataField(list(_TINY_MERGES), array, string),
            "tokenizer.ggml.bos_token_id": MetadataField(ids["<|endoftext|>"], u32),
            "tokenizer.ggml.eos_token_id": MetadataField(ids["<|im_end|>"], u32),
            "tokenizer.ggml.padding_token_id": MetadataField(ids["<|endoftext|>"], u32),
            "tokenizer.ggml.add_bos_token": MetadataField(False, GGUFValueType.BOOL),
            "tokenizer.chat_template": MetadataField(CHATML_TEMPLATE, string),
        }
    )


def tokenizer_from_gguf(path: str | os.PathLike[str]) -> TokenizerSpec:
    """Copy every `tokenizer.*` key, with its exact type, from an existing GGUF model."""
    read_header(path)  # validates lengths before the gguf package trusts them
    fields: dict[str, MetadataField] = {}
    for name, field in GGUFReader(path).fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = GGUFValueType(field.types[0])
        sub = GGUFValueType(field.types[-1]) if vtype == GGUFValueType.ARRAY else None
        fields[name] = MetadataField(field.contents(), vtype, sub)
    if "tokenizer.ggml.tokens" not in fields:
        raise InvalidModelFileError(f"{path}: has no tokenizer to copy")
    return TokenizerSpec(fields)


@dataclass(frozen=True)
class _LlamaParams:
    n_vocab: int
    n_ctx: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rms_eps: float
    rope_theta: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> _LlamaParams:
        n_head = int(config["num_attention_heads"])
        rope = config.get("rope_parameters") or {}  # transformers >= 5 nests rope_theta here
        return cls(
            n_vocab=int(config["vocab_size"]),
            n_ctx=int(config.get("max_position_embeddings", 2048)),
            n_embd=int(config["hidden_size"]),
            n_ff=int(config["intermediate_size"]),
            n_layer=int(config["num_hidden_layers"]),
            n_head=n_head,
            n_head_kv=int(config.get("num_key_value_heads") or n_head),
            head_dim=int(config.get("head_dim") or config["hidden_size"] // n_head),
            rms_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(config.get("rope_theta", rope.get("rope_theta", 10000.0))),
        )


def write_llama_gguf(
    path: str | os.PathLike[str],
    config: Mapping[str, Any],
    state: Mapping[str, np.ndarray],
    tokenizer: TokenizerSpec,
    *,
    dtype: str = "f32",
    name: str = "tiny-llama",
) -> Path:
    """Write `state` (HF llama names, torch layout) as a llama GGUF that llama.cpp can run.

    `dtype` is "f32" or "f16" for the matrices; norms always stay F32. `lm_head.weight` may be
    left out when the embeddings are tied: llama.cpp then reuses `token_embd.weight`.
    """
    if dtype not in ("f32", "f16"):
        raise InvalidModelFileError(f"cannot write {dtype!r} tensors; use 'f32' or 'f16'")
    hp = _LlamaParams.from_config(config)
    if tokenizer.n_vocab != hp.n_vocab:
        raise InvalidModelFileError(
            f"tokenizer has {tokenizer.n_vocab} tokens but the config says {hp.n_vocab}"
        )
    path = Path(path)
    writer = GGUFWriter(path, arch="llama")
    _add_hparams(writer, hp, name, dtype)
    for key, field in tokenizer.fields.items():
        writer.add_key_value(key, field.value, field.vtype, field.sub_type)
    for gguf_name, array in _gguf_tensors(state, hp, dtype):
        writer.add_tensor(gguf_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_hparams(writer: GGUFWriter, hp: _LlamaParams, name: str, dtype: str) -> None:
    writer.add_name(name)
    writer.add_basename(name)
    writer.add_file_type(LlamaFileType.ALL_F32 if dtype == "f32" else LlamaFileType.MOSTLY_F16)
    writer.add_vocab_size(hp.n_vocab)
    writer.add_context_length(hp.n_ctx)
    writer.add_embedding_length(hp.n_embd)
    writer.add_feed_forward_length(hp.n_ff)
    writer.add_block_count(hp.n_layer)
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_head_kv)
    writer.add_rope_dimension_count(hp.head_dim)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_layer_norm_rms_eps(hp.rms_eps)
    if hp.head_dim * hp.n_head != hp.n_embd:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)


def _gguf_tensors(
    state: Mapping[str, np.ndarray], hp: _LlamaParams, dtype: str
) -> Iterator[tuple[str, np.ndarray]]:
    for hf_name, tensor in state.items():
        gguf_name = gguf_tensor_name(hf_name)
        if gguf_name is None:
            raise InvalidModelFileError(
                f"state dict tensor {hf_name!r} has no place in a llama GGUF"
            )
        array = np.asarray(tensor, dtype=np.float32)
        heads = rope_heads(gguf_name, hp.n_head, hp.n_head_kv)
        if heads is not None:
            array = rope_permute(array, heads)
        # 1-D norms stay F32: llama.cpp's norm kernels want F32 weights.
        wanted = np.float16 if dtype == "f16" and array.ndim > 1 else np.float32
        yield gguf_name, np.ascontiguousarray(array.astype(wanted))
