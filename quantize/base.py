"""The base a variant is made from: a Hugging Face folder, or a GGUF dequantized to one.

Every variant starts from float32 weights in a Hugging Face folder (what onnxruntime-genai's
builder reads) plus the GGUF tokenizer metadata and base identity (what the GGUF writer and
the adapters need). A GGUF base is dequantized by transformers, so a variant of a quantized
model is a *requantization* of its dequantized weights, never better than its source.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import QuantizeError
from edge_agent.models.gguf import BaseModelIdentity, identity_of, read_header
from edge_agent.models.plan import entry_from_gguf
from quantize.gguf_writer import TokenizerSpec, tokenizer_from_gguf
from quantize.hf_tokenizer import tokenizer_from_hf

__all__ = ["Base", "prepare_base"]

# transformers' GGUF loader names no architecture class; the builder dispatches on it.
_ARCHITECTURES = {"llama": "LlamaForCausalLM"}


@dataclass(frozen=True)
class Base:
    """Float32 weights in ``hf_dir`` and what a GGUF of them must carry."""

    name: str
    hf_dir: Path
    identity: BaseModelIdentity
    tokenizer: TokenizerSpec | None  # None: cannot be written as GGUF (not a byte-level BPE)
    source: Path
    source_quantization: str  # "F32" for an HF folder, else the GGUF's dominant type

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = json.loads((self.hf_dir / "config.json").read_text())
        return config

    def state(self) -> dict[str, Any]:
        """The float32 weights as numpy arrays, by Hugging Face name."""
        from safetensors.numpy import load_file

        state: dict[str, Any] = {}
        for shard in sorted(self.hf_dir.glob("*.safetensors")):
            state |= load_file(str(shard))
        return state


def prepare_base(source: str | os.PathLike[str], work_dir: Path) -> Base:
    """An HF folder is used as it is; a GGUF is dequantized into ``work_dir/hf``."""
    source = Path(source).expanduser()
    if source.is_dir():
        return _from_hf(source)
    if source.is_file():
        return _from_gguf(source, work_dir / "hf")
    raise QuantizeError(f"{source}: no such GGUF file or Hugging Face folder")


def _from_gguf(path: Path, hf_dir: Path) -> Base:
    header = read_header(path)  # validated before transformers parses it
    identity = identity_of(header)
    if identity.architecture not in _ARCHITECTURES:
        raise QuantizeError(
            f"{path.name}: architecture {identity.architecture!r} is not supported here "
            f"(supported: {', '.join(_ARCHITECTURES)}); start from a Hugging Face folder"
        )
    if not (hf_dir / "config.json").exists():
        _dequantize(path, hf_dir, _ARCHITECTURES[identity.architecture])
    name = str(header.metadata.get("general.basename") or path.stem)
    quantization = entry_from_gguf(path).quantization
    return Base(name, hf_dir, identity, tokenizer_from_gguf(path), path, quantization)


def _dequantize(path: Path, hf_dir: Path, architecture: str) -> None:
    """GGUF → float32 HF folder. The GGUF-loaded model refuses ``save_pretrained``, so the
    weights move into a model built from its config, without the quantization config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    config = loaded.config
    config.architectures = [architecture]
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    tmp = hf_dir.with_name(hf_dir.name + ".partial")
    fresh.save_pretrained(str(tmp))
    AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name).save_pretrained(str(tmp))
    _drop_quantization_config(tmp / "config.json")
    tmp.rename(hf_dir)


def _drop_quantization_config(path: Path) -> None:
    config = json.loads(path.read_text())
    config.pop("quantization_config", None)
    path.write_text(json.dumps(config, indent=2) + "\n")


def _from_hf(folder: Path) -> Base:
    config_path = folder / "config.json"
    if not config_path.exists():
        raise QuantizeError(f"{folder}: has no config.json; it is not a Hugging Face model folder")
    config = json.loads(config_path.read_text())
    identity = identity_from_config(config, folder.name)
    tokenizer = tokenizer_from_hf(folder)
    return Base(identity.base_name or folder.name, folder, identity, tokenizer, folder, "F32")


def identity_from_config(config: dict[str, Any], fallback_name: str) -> BaseModelIdentity:
    """The base identity of an HF config; the base name is the folder's, lower-cased."""
    try:
        n_head = int(config["num_attention_heads"])
        return BaseModelIdentity(
            architecture=str(config.get("model_type", "")),
            base_name=" ".join(fallback_name.lower().split()),
            n_layer=int(config["num_hidden_layers"]),
            n_embd=int(config["hidden_size"]),
            n_ff=int(config.get("intermediate_size", 0)),
            n_head=n_head,
            n_head_kv=int(config.get("num_key_value_heads") or n_head),
            n_vocab=int(config["vocab_size"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise QuantizeError(f"config.json lacks {exc}; it is not a decoder model config") from exc
