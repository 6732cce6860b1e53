"""A tiny random Gemma 3, as a GGUF for llama.cpp and as a transformers model.

Like tests/tinymodel.py's llama, both forms hold the same numpy weights, so a difference
between llama.cpp and torch is the adapter exporter's (or the loader's) fault. What makes it
Gemma: per-head q/k norms, four norms per layer stored as 1 + w in the GGUF (llama.cpp's
convention; transformers subtracts the 1 again), scaled embeddings, a head size of its own
(256, so q is wider than the model), and five sliding-window layers per full one (llama.cpp
fixes that pattern for gemma3, so the tiny model has six layers). The window is 8 tokens so
that prompts cross it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gguf import GGUFWriter, LlamaFileType

from quantize.gguf_writer import TokenizerSpec, tiny_bpe_tokenizer

if TYPE_CHECKING:
    from torch import nn

HEAD_DIM = 256  # transformers reads no query_pre_attn_scalar from a GGUF: 256 is its default
WINDOW = 8
_LAYER = {
    "input_layernorm": "attn_norm", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm", "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}  # fmt: skip


@dataclass(frozen=True)
class TinyGemma:
    config: dict[str, Any]
    state: dict[str, np.ndarray]
    tokenizer: TokenizerSpec
    gguf_path: Path

    def torch_model(self) -> nn.Module:
        """A fresh float32 `Gemma3ForCausalLM` holding exactly `state`, in eval mode."""
        import torch
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        model = Gemma3ForCausalLM(Gemma3TextConfig(**self.config))
        weights = {k: torch.from_numpy(v.copy()) for k, v in self.state.items()}
        model.load_state_dict(weights, strict=False)  # lm_head is tied to the embeddings
        return model.eval()


def tiny_gemma_config(n_vocab: int) -> dict[str, Any]:
    return {
        "vocab_size": n_vocab, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 6, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": HEAD_DIM, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
        "sliding_window": WINDOW, "tie_word_embeddings": True,
        "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
    }  # fmt: skip


def make_tiny_gemma(tmp_dir: Path, seed: int = 0) -> TinyGemma:
    tokenizer = tiny_bpe_tokenizer()
    config = tiny_gemma_config(tokenizer.n_vocab)
    state = _random_state(config, np.random.default_rng(seed))
    path = _write_gguf(Path(tmp_dir) / "tiny-gemma3-f32.gguf", config, state, tokenizer)
    return TinyGemma(config, state, tokenizer, path)


def _random_state(config: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    d, ff, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    q, kv = config["num_attention_heads"] * HEAD_DIM, config["num_key_value_heads"] * HEAD_DIM

    def linear(n_out: int, n_in: int, gain: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((n_out, n_in)) * gain / np.sqrt(n_in)).astype(np.float32)

    def norm(n: int = d) -> np.ndarray:  # Gemma's norms scale by 1 + w
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    state = {"model.embed_tokens.weight": (rng.standard_normal((vocab, d)) / 8).astype(np.float32)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        state |= {
            p + "self_attn.q_proj.weight": linear(q, d, 2.0),
            p + "self_attn.k_proj.weight": linear(kv, d, 2.0),
            p + "self_attn.v_proj.weight": linear(kv, d),
            p + "self_attn.o_proj.weight": linear(d, q),
            p + "mlp.gate_proj.weight": linear(ff, d),
            p + "mlp.up_proj.weight": linear(ff, d),
            p + "mlp.down_proj.weight": linear(d, ff),
            p + "self_attn.q_norm.weight": norm(HEAD_DIM),
            p + "self_attn.k_norm.weight": norm(HEAD_DIM),
        }
        for name in ("input_layernorm", "post_attention_layernorm",
                     "pre_feedforward_layernorm", "post_feedforward_layernorm"):  # fmt: skip
            state[p + name + ".weight"] = norm()
    state["model.norm.weight"] = norm()
    return state


def _gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    _, _, layer, module = hf_name.removesuffix(".weight").split(".", 3)
    return f"blk.{layer}.{_LAYER[module]}.weight"


def _write_gguf(
    path: Path, config: dict[str, Any], state: dict[str, np.ndarray], tokenizer: TokenizerSpec
) -> Path:
    writer = GGUFWriter(path, arch="gemma3")
    writer.add_name("tiny-gemma3")
    writer.add_basename("tiny-gemma3")
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(WINDOW)
    for key, field in tokenizer.fields.items():
        writer.add_key_value(key, field.value, field.vtype, field.sub_type)
    for hf_name, array in state.items():
        stored = array + 1.0 if array.ndim == 1 else array  # llama.cpp's gemma norms: 1 + w
        writer.add_tensor(_gguf_name(hf_name), np.ascontiguousarray(stored, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
