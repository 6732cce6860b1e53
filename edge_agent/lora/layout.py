"""Where Hugging Face llama tensors go in a llama.cpp GGUF, and in which row order.

Shared by the adapter exporter and the host's GGUF writer (quantize/), so a base model and its
adapters can never disagree about names or about the q/k rotary permutation.
"""

from __future__ import annotations

import re

import numpy as np

# Module inside `model.layers.{i}.` → llama.cpp's name for it in block i.
LAYER_MODULES: dict[str, str] = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
GLOBAL_TENSORS: dict[str, str] = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER_TENSOR = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")


def gguf_tensor_name(hf_name: str) -> str | None:
    """llama.cpp's name for an HF llama weight, or None if llama has no such tensor."""
    if hf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[hf_name]
    match = _LAYER_TENSOR.fullmatch(hf_name)
    if match is None or match.group(2) not in LAYER_MODULES:
        return None
    return f"blk.{match.group(1)}.{LAYER_MODULES[match.group(2)]}.weight"


# Architectures whose llama.cpp rope rotates halves ("NEOX"), as HF does: their q/k rows are
# stored in HF order, so neither the converter nor an adapter permutes them.
ROTATE_HALF_ARCHITECTURES = frozenset({"gemma", "gemma2", "gemma3", "qwen2", "qwen3"})
# Architectures whose head size is its own hyperparameter, so q's width need not be n_embd.
HEAD_DIM_ARCHITECTURES = frozenset({"gemma", "gemma2", "gemma3", "qwen3"})


def permutes_qk(architecture: str) -> bool:
    """Whether q/k rows (and LoRA B rows feeding them) get `rope_permute` for this GGUF
    architecture; llama's pairwise rope needs it, rotate-half ropes must not have it."""
    return architecture not in ROTATE_HALF_ARCHITECTURES


def rope_heads(gguf_name: str, n_head: int, n_head_kv: int) -> int | None:
    """How many heads to permute the rows of this tensor over, or None if it is not q or k."""
    if ".attn_q." in gguf_name:
        return n_head
    if ".attn_k." in gguf_name:
        return n_head_kv
    return None


def rope_permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the output rows of a q/k projection (or of a LoRA B matrix feeding one).

    HF llama rotates dimension j of each head with dimension j + head_dim/2 ("rotate half");
    llama.cpp's llama rope rotates adjacent pairs (2j, 2j+1). Interleaving each head's two
    halves makes the same weights produce the same attention under llama.cpp's kernel.
    """
    head_dim = rows.shape[0] // n_head
    if head_dim * n_head != rows.shape[0] or head_dim % 2:
        raise ValueError(f"{rows.shape[0]} rows do not split into {n_head} even-sized heads")
    split = rows.reshape(n_head, 2, head_dim // 2, *rows.shape[1:])
    return split.swapaxes(1, 2).reshape(rows.shape)
