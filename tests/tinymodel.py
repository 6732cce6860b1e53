"""A tiny random llama, as a GGUF for llama.cpp and as a transformers model, plus a peft LoRA.

Both forms come from the same numpy weights, so any difference between what llama.cpp and
torch compute is the GGUF writer's or the adapter exporter's fault. torch, transformers and
peft are imported lazily: the GGUF alone needs only numpy and gguf.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.lora.gguf import load_peft_adapter
from quantize.gguf_writer import TokenizerSpec, tiny_bpe_tokenizer, write_llama_gguf

if TYPE_CHECKING:
    from torch import nn

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TinyModel:
    config: dict[str, Any]
    state: dict[str, np.ndarray]
    tokenizer: TokenizerSpec
    gguf_path: Path

    def torch_model(self) -> nn.Module:
        """A fresh float32 `LlamaForCausalLM` holding exactly `state`, in eval mode."""
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(**self.config))
        weights = {k: torch.from_numpy(v.copy()) for k, v in self.state.items()}
        model.load_state_dict(weights, strict=True)
        return model.eval()


@dataclass(frozen=True)
class TinyLora:
    base: TinyModel
    directory: Path  # a peft save: adapter_config.json + adapter_model.safetensors
    state: dict[str, np.ndarray]
    alpha: float
    rank: int

    def torch_model(self) -> nn.Module:
        """The base's torch model with this adapter loaded by peft itself, in eval mode."""
        from peft import PeftModel

        return PeftModel.from_pretrained(self.base.torch_model(), str(self.directory)).eval()


def tiny_config(n_vocab: int, context: int = 256) -> dict[str, Any]:
    return {
        "vocab_size": n_vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": context,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "tie_word_embeddings": False,
    }


def make_tiny_llama(tmp_dir: Path, seed: int = 0, context: int = 256) -> TinyModel:
    """Random weights scaled like a trained model (unit-variance activations), so attention is
    sharp enough that a wrong q/k layout shows in the logits."""
    tokenizer = tiny_bpe_tokenizer()
    config = tiny_config(tokenizer.n_vocab, context)
    state = _random_state(config, np.random.default_rng(seed))
    path = write_llama_gguf(Path(tmp_dir) / "tiny-llama-f32.gguf", config, state, tokenizer)
    return TinyModel(config, state, tokenizer, path)


def _random_state(config: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    d, ff, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = d * config["num_key_value_heads"] // config["num_attention_heads"]

    def linear(n_out: int, n_in: int, gain: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((n_out, n_in)) * gain / np.sqrt(n_in)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32)

    state = {"model.embed_tokens.weight": rng.standard_normal((vocab, d)).astype(np.float32)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        state |= {
            p + "input_layernorm.weight": norm(),
            p + "self_attn.q_proj.weight": linear(d, d, gain=2.0),
            p + "self_attn.k_proj.weight": linear(kv, d, gain=2.0),
            p + "self_attn.v_proj.weight": linear(kv, d),
            p + "self_attn.o_proj.weight": linear(d, d),
            p + "post_attention_layernorm.weight": norm(),
            p + "mlp.gate_proj.weight": linear(ff, d),
            p + "mlp.up_proj.weight": linear(ff, d),
            p + "mlp.down_proj.weight": linear(d, ff),
        }
    state["model.norm.weight"] = norm()
    state["lm_head.weight"] = linear(vocab, d, gain=4.0)
    return state


def make_tiny_lora(
    tiny: TinyModel, rank: int = 4, seed: int = 1, out_dir: Path | None = None
) -> TinyLora:
    """A peft LoRA on every projection of `tiny`, saved by peft so key names are peft's own.

    peft starts B at zero (a no-op adapter); both A and B are made random here so the adapter
    visibly changes the logits.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=list(LORA_TARGETS)
    )
    model = get_peft_model(tiny.torch_model(), config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_A." in name:
                param.copy_(torch.randn(param.shape, generator=gen) / param.shape[1] ** 0.5)
            elif ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5 / rank**0.5)
    directory = out_dir or tiny.gguf_path.parent / f"lora-r{rank}-s{seed}"
    model.save_pretrained(str(directory))
    state, alpha, saved_rank = load_peft_adapter(directory)
    return TinyLora(tiny, directory, state, alpha, saved_rank)
