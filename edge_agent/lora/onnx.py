"""LoRA adapters for the onnx backend: ``.onnx_adapter`` files that fill a model's LoRA slots.

A model built by ``quantize`` has, on every attention/MLP projection of layer N, graph inputs
``model.layers.N.<module>.lora_A`` (n_in, rank) and ``.lora_B`` (rank, n_out), so the output
is x·W + x·A·B; onnxruntime's adapter format carries named tensors for them. They are made
from our GGUF adapter (llama.cpp's format): A is lora_a transposed, B is lora_b times
alpha / rank, transposed, with the q/k rows put back from llama.cpp's rope order into
Hugging Face's. One GGUF adapter file thus serves both backends.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import AdapterMismatchError, InvalidAdapterError
from edge_agent.lora.gguf import export_lora_gguf, load_peft_adapter, require_same_base
from edge_agent.lora.layout import LAYER_MODULES
from edge_agent.models.gguf import BaseModelIdentity

__all__ = [
    "check_fits",
    "lora_params_from_gguf",
    "onnx_adapter_from_peft",
    "read_onnx_adapter",
    "write_onnx_adapter",
]

_LORA_INPUT = re.compile(r"(model\.layers\.\d+\.(?:self_attn|mlp)\.\w+_proj)\.lora_([AB])")
# llama.cpp's module name -> the Hugging Face module path, for the projections only.
_HF_MODULES = {gguf: hf for hf, gguf in LAYER_MODULES.items() if hf.endswith("_proj")}


def lora_params_from_gguf(path: Path, identity: BaseModelIdentity) -> dict[str, np.ndarray]:
    """A LoRA GGUF made for ``identity`` as slot inputs: A (n_in, r) and B·scale (r, n_out)."""
    from gguf import GGUFReader

    require_same_base(path, identity)  # validates the header before GGUFReader trusts it
    reader = GGUFReader(path)
    alpha_field = reader.get_field("adapter.lora.alpha")
    alpha = float(alpha_field.contents()) if alpha_field is not None else 0.0
    halves = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    params: dict[str, np.ndarray] = {}
    for name in sorted(n.removesuffix(".lora_a") for n in halves if n.endswith(".lora_a")):
        a, b = halves[f"{name}.lora_a"], halves.get(f"{name}.lora_b")
        if b is None or a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise InvalidAdapterError(f"{path.name}: {name} has no matching lora_a/lora_b pair")
        slot, b = _slot_of(name, b, identity, path)
        scale = (alpha or a.shape[0]) / a.shape[0]  # llama.cpp: no alpha means scale 1
        params[f"{slot}.lora_A"] = np.ascontiguousarray(a.T)
        params[f"{slot}.lora_B"] = np.ascontiguousarray((b * scale).T)
    if not params:
        raise InvalidAdapterError(f"{path.name}: holds no LoRA tensors")
    return params


def _slot_of(
    name: str, b: np.ndarray, identity: BaseModelIdentity, path: Path
) -> tuple[str, np.ndarray]:
    """The slot name of ``blk.N.module.weight`` and its B rows in Hugging Face order."""
    parts = name.split(".")
    if len(parts) != 4 or parts[2] not in _HF_MODULES or not parts[1].isdigit():
        raise InvalidAdapterError(f"{path.name}: tensor {name} is not a LoRA on a projection")
    heads = {"attn_q": identity.n_head, "attn_k": identity.n_head_kv}.get(parts[2])
    if heads is not None:
        b = _rope_unpermute(b, heads)
    return f"model.layers.{parts[1]}.{_HF_MODULES[parts[2]]}", b


def _rope_unpermute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Undo adapters.layout.rope_permute: llama.cpp's adjacent-pair rows back to HF's halves."""
    head_dim = rows.shape[0] // n_head
    split = rows.reshape(n_head, head_dim // 2, 2, *rows.shape[1:])
    return split.swapaxes(1, 2).reshape(rows.shape)


def write_onnx_adapter(params: Mapping[str, np.ndarray], path: Path) -> Path:
    """Write LoRA slot inputs as an onnxruntime adapter file (``.onnx_adapter``)."""
    import onnxruntime as ort

    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters(
        {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
    )
    adapter.export_adapter(str(path))
    return Path(path)


def onnx_adapter_from_peft(directory: Path, identity: BaseModelIdentity, path: Path) -> Path:
    """A peft LoRA save as an ``.onnx_adapter`` (via the GGUF exporter, so both formats hold
    the same numbers): what the flywheel ships to a device that runs ONNX."""
    state, alpha, _ = load_peft_adapter(directory)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = export_lora_gguf(state, alpha=alpha, identity=identity, path=Path(tmp) / "a.gguf")
        return write_onnx_adapter(lora_params_from_gguf(gguf, identity), path)


def read_onnx_adapter(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes in an ``.onnx_adapter``, by name."""
    import onnxruntime as ort

    try:
        params = ort.AdapterFormat.read_adapter(str(path)).get_parameters()
    except Exception as exc:  # onnxruntime raises its own types for a bad flatbuffer
        raise InvalidAdapterError(f"{path.name}: is not an onnxruntime adapter ({exc})") from exc
    return {name: tuple(value.shape()) for name, value in params.items()}


def check_fits(params: Mapping[str, Any], slots: Mapping[str, tuple[int, int]], path: Path) -> None:
    """Every tensor fills a LoRA slot of this model, with its shapes; else name the first."""
    for name, value in params.items():
        shape = tuple(getattr(value, "shape", value))
        match = _LORA_INPUT.fullmatch(name)
        if match is None or match.group(1) not in slots:
            raise AdapterMismatchError(f"{path.name}: {name} has no LoRA slot in this model")
        n_in, n_out = slots[match.group(1)]
        want_ok = shape[0] == n_in if match.group(2) == "A" else shape[-1] == n_out
        if len(shape) != 2 or not want_ok:
            raise AdapterMismatchError(
                f"{path.name}: {name} has shape {shape}, which does not fit this model's "
                f"{match.group(1)} ({n_in} -> {n_out}); use an adapter trained for this base"
            )
