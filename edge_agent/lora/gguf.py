"""Our LoRA adapter file: llama.cpp's GGUF LoRA format plus the base model it belongs to.

What llama.cpp reads (llama-adapter.cpp):
    general.type = "adapter", general.architecture (must equal the model's),
    adapter.type = "lora", adapter.lora.alpha (scale = alpha / rank, per tensor)
    blk.{i}.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}.weight.lora_a / .lora_b
        lora_a: torch shape (rank, n_in)   lora_b: torch shape (n_out, rank)
        The rows of attn_q/attn_k lora_b get the same rotary permutation as the base q/k weights
        (layout.rope_permute); without it the adapter silently computes something else. Not
        for rotate-half architectures (gemma3, qwen2): their base rows are in HF order.
What we add:
    edge_agent.base.{architecture,base_name,n_layer,n_embd,n_ff,n_head,n_head_kv,n_vocab}
        llama.cpp only checks the architecture and tensor shapes, so an adapter trained on
        another model of the same shape would load and produce garbage. The runtime compares
        these keys with the model's identity and raises AdapterMismatchError first.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import AdapterMismatchError, InvalidAdapterError, InvalidModelFileError
from edge_agent.lora.layout import (
    HEAD_DIM_ARCHITECTURES,
    LAYER_MODULES,
    permutes_qk,
    rope_heads,
    rope_permute,
)
from edge_agent.models.gguf import BaseModelIdentity, read_header

__all__ = [
    "IDENTITY_PREFIX",
    "adapter_identity",
    "export_lora_gguf",
    "load_peft_adapter",
    "require_same_base",
]

IDENTITY_PREFIX = "edge_agent.base."
_PEFT_KEY = re.compile(
    r"(?:base_model\.model\.)?model\.layers\.(\d+)\."
    r"(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.lora_([AB])(?:\.default)?\.weight"
)
_DTYPES = {"f32": np.float32, "f16": np.float16}
_FFN_IN = {"ffn_down"}
_FFN_OUT = {"ffn_gate", "ffn_up"}


def load_peft_adapter(
    directory: str | os.PathLike[str],
) -> tuple[dict[str, np.ndarray], float, int]:
    """Read a peft LoRA save (adapter_model.safetensors + adapter_config.json).

    Returns (state, alpha, rank) with alpha already adjusted so that alpha / rank is the
    scale peft applies (rsLoRA scales by alpha / sqrt(rank) instead).
    """
    directory = Path(directory)
    config = _read_peft_config(directory / "adapter_config.json")
    rank = int(config["r"])
    alpha = float(config["lora_alpha"])
    if config.get("use_rslora"):
        alpha *= math.sqrt(rank)
    return _load_safetensors(directory / "adapter_model.safetensors"), alpha, rank


def export_lora_gguf(
    lora_state: Mapping[str, np.ndarray],
    *,
    alpha: float,
    identity: BaseModelIdentity,
    path: str | os.PathLike[str],
    n_head: int | None = None,
    n_head_kv: int | None = None,
    dtype: str = "f32",
    _permute_qk: bool = True,
) -> Path:
    """Write peft-named LoRA weights as a llama.cpp adapter GGUF tagged with `identity`.

    `n_head`/`n_head_kv` default to the identity's. `dtype` "f16" halves the file; f32 is
    the default because adapters are small. `_permute_qk=False` exists only for the test that
    proves the permutation matters.
    """
    from gguf import GGUFValueType, GGUFWriter

    if dtype not in _DTYPES:
        raise InvalidAdapterError(f"cannot export {dtype!r} adapters; use 'f32' or 'f16'")
    n_head = n_head or identity.n_head
    n_head_kv = n_head_kv or identity.n_head_kv
    pairs = _pair_up(lora_state)
    writer = GGUFWriter(Path(path), arch=identity.architecture)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    for key, value in identity.as_dict().items():
        vtype = GGUFValueType.STRING if isinstance(value, str) else GGUFValueType.UINT32
        writer.add_key_value(IDENTITY_PREFIX + key, value, vtype)
    wanted = _DTYPES[dtype]
    _permute_qk = _permute_qk and permutes_qk(identity.architecture)
    for name, (a, b) in sorted(pairs.items(), key=lambda kv: _layer_order(kv[0])):
        _check_shapes(name, a, b, identity)
        heads = rope_heads(name, n_head, n_head_kv)
        rows = rope_permute(b, heads) if heads is not None and _permute_qk else b
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=wanted))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(rows, dtype=wanted))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def adapter_identity(path: str | os.PathLike[str]) -> BaseModelIdentity:
    """The base model an adapter file was exported for, read without handing it to llama.cpp."""
    try:
        meta = read_header(path).metadata
    except InvalidModelFileError as e:
        raise InvalidAdapterError(str(e)) from e
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise InvalidAdapterError(f"{path}: is not a LoRA adapter GGUF")
    fields: dict[str, Any] = {}
    for key in BaseModelIdentity.__dataclass_fields__:
        value = meta.get(IDENTITY_PREFIX + key)
        if value is None:
            raise InvalidAdapterError(
                f"{path}: lacks {IDENTITY_PREFIX}{key}, so its base model is unknown; "
                "re-export it with edge-agent"
            )
        fields[key] = value
    return BaseModelIdentity(**fields)


def require_same_base(path: str | os.PathLike[str], base: BaseModelIdentity) -> None:
    """Raise AdapterMismatchError unless the adapter at `path` was exported for `base`."""
    differences = adapter_identity(path).differences(base)
    if differences:
        raise AdapterMismatchError(
            f"{path}: was trained for another base model ({'; '.join(differences)}); "
            "use an adapter built for this model"
        )


# --- helpers ----------------------------------------------------------------------------------


def _read_peft_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InvalidAdapterError(f"{path}: cannot read the peft adapter config ({e})") from e
    if not isinstance(config, dict) or "r" not in config or "lora_alpha" not in config:
        raise InvalidAdapterError(f"{path}: is not a peft LoRA config (no r / lora_alpha)")
    if config.get("use_dora") or config.get("alpha_pattern"):
        raise InvalidAdapterError(
            f"{path}: DoRA and per-module alpha cannot be expressed in a llama.cpp adapter; "
            "train a plain LoRA"
        )
    return config


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    except OSError as e:
        raise InvalidAdapterError(f"{path}: cannot read adapter weights ({e})") from e
    except (TypeError, ValueError):
        pass  # numpy has no bfloat16; torch (host side) can read and widen it
    try:
        from safetensors.torch import load_file as load_torch
    except ImportError as e:
        raise InvalidAdapterError(f"{path}: unreadable without torch (bfloat16?)") from e
    return {k: v.float().numpy() for k, v in load_torch(str(path)).items()}


def _pair_up(lora_state: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    halves: dict[tuple[str, str], np.ndarray] = {}
    for key, tensor in lora_state.items():
        match = _PEFT_KEY.fullmatch(key)
        if match is None:
            raise InvalidAdapterError(
                f"adapter tensor {key!r} is not a LoRA on a decoder layer's attention or MLP "
                "projection; only those can be exported"
            )
        layer, module, half = match.groups()
        name = f"blk.{layer}.{LAYER_MODULES[module]}.weight"
        halves[(name, half)] = np.asarray(tensor, dtype=np.float32)
    pairs = {}
    for name in sorted({name for name, _ in halves}):
        if (name, "A") not in halves or (name, "B") not in halves:
            raise InvalidAdapterError(f"adapter has only one of lora_A/lora_B for {name}")
        pairs[name] = (halves[(name, "A")], halves[(name, "B")])
    return pairs


def _layer_order(name: str) -> tuple[int, str]:
    return int(name.split(".")[1]), name


def _check_shapes(name: str, a: np.ndarray, b: np.ndarray, base: BaseModelIdentity) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
        raise InvalidAdapterError(f"{name}: lora_A {a.shape} and lora_B {b.shape} do not pair")
    module = name.split(".")[2]
    n_in_ok = _fits_input(module, a.shape[1], base)
    n_out_ok = _fits_output(module, b.shape[0], base)
    if int(name.split(".")[1]) >= base.n_layer or not n_in_ok or not n_out_ok:
        raise AdapterMismatchError(
            f"{name}: lora shapes A {a.shape}, B {b.shape} do not fit the base model "
            f"({base.base_name or base.architecture}: {base.n_layer} layers, "
            f"n_embd {base.n_embd}, n_ff {base.n_ff})"
        )


def _fits_input(module: str, n_in: int, base: BaseModelIdentity) -> bool:
    if module in _FFN_IN:
        return n_in == base.n_ff
    if module == "attn_output" and base.architecture in HEAD_DIM_ARCHITECTURES:
        return n_in % (2 * base.n_head) == 0  # the heads' width (gemma3: 4 x 256, not 640)
    return n_in == base.n_embd


def _fits_output(module: str, n_out: int, base: BaseModelIdentity) -> bool:
    if module in _FFN_OUT:
        return n_out == base.n_ff
    if module in ("attn_output", "ffn_down"):
        return n_out == base.n_embd
    heads = base.n_head if module == "attn_q" else base.n_head_kv
    return n_out % (2 * heads) == 0  # whole heads of even size (rope rotates pairs)
