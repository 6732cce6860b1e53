"""ONNX variants: onnxruntime-genai's model builder, then LoRA slots for runtime adapters.

The builder quantizes weights to int4/int8 (MatMulNBits) or keeps them float. Its graphs bake
a LoRA in, if at all; to switch adapters at run time (``og.Adapters``) the LoRA weights must
be graph inputs instead. So after the build every projection ``y = x·W`` becomes
``y = x·W + (x·A)·B`` with A and B graph inputs whose defaults have rank 0 (adding nothing);
an adapter file fills them by name. The builder is asked not to fuse q/k/v, so each
projection has its own slot, named as in Hugging Face (``model.layers.3.self_attn.q_proj``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edge_agent.backends.onnx import MODEL_INFO
from edge_agent.errors import QuantizeError
from quantize.base import Base

__all__ = ["ONNX_PRECISIONS", "add_lora_slots", "build_onnx"]

ONNX_PRECISIONS = ("int4", "int8", "fp32")  # what the builder makes for the CPU provider
_PROJECTION = re.compile(r"/model/layers\.(\d+)/(attn|mlp)/(\w+_proj)/MatMul(?:_Q\d+)?")
_MATMULS = ("MatMul", "MatMulNBits")
_BLOCK = {"attn": "self_attn", "mlp": "mlp"}


def build_onnx(base: Base, out: Path, precision: str, *, threads: int = 1) -> Path:
    """An onnxruntime-genai model folder of ``base`` at ``precision``, with LoRA slots."""
    if precision not in ONNX_PRECISIONS:
        raise QuantizeError(
            f"unknown ONNX precision {precision!r}; choose one of: {', '.join(ONNX_PRECISIONS)}"
        )
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _run_builder(base.hf_dir, partial, precision, threads)
    try:
        slots = add_lora_slots(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    info = {
        "name": f"{base.name}-onnx-{precision}",
        "precision": precision,
        "base_identity": base.identity.as_dict(),
        "source": str(base.source),
        "source_quantization": base.source_quantization,
        "lora_slots": slots,
    }
    (partial / MODEL_INFO).write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def _run_builder(hf_dir: Path, out: Path, precision: str, threads: int) -> None:
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as cache:
        command = [
            sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir.resolve()),
            "-o", str(out.resolve()), "-p", precision, "-e", "cpu", "-c", cache,
            "--extra_options", "fuse_qkv=false",
        ]  # fmt: skip
        # cwd: onnxruntime's tools drop temporary files in the working directory.
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=cache, check=False
        )
    if done.returncode != 0 or not (out / "genai_config.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise QuantizeError(
            f"onnxruntime-genai's builder failed on {hf_dir} ({precision}): "
            f"{lines[-1] if lines else 'no output'}; is the architecture one it supports?"
        )


def add_lora_slots(folder: Path, filename: str = "model.onnx") -> dict[str, list[int]]:
    """Give every attention/MLP projection of the graph a LoRA slot; return slot -> [in, out]."""
    import onnx

    path = folder / filename
    model = onnx.load(str(path), load_external_data=False)  # weights stay where they are
    graph = model.graph
    dtype = next(o.type.tensor_type.elem_type for o in graph.output if o.name == "logits")
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    nodes, slots = [], {}
    for node in graph.node:
        nodes.append(node)
        match = _PROJECTION.fullmatch(node.name)
        if match is None or node.op_type not in _MATMULS:
            continue
        layer, block, module = match.groups()
        slot = f"model.layers.{layer}.{_BLOCK[block]}.{module}"
        slots[slot] = _in_out(node, shapes)
        nodes.extend(_slot_nodes(graph, node, slot, slots[slot], dtype))
    if not slots:
        raise QuantizeError(f"{path}: found no projection to give a LoRA slot (builder changed?)")
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(path))
    return slots


def _in_out(node: Any, shapes: dict[str, list[int]]) -> list[int]:
    attrs = {a.name: a.i for a in node.attribute}
    if node.op_type == "MatMulNBits":
        return [int(attrs["K"]), int(attrs["N"])]
    n_in, n_out = shapes[node.input[1]]
    return [int(n_in), int(n_out)]


def _slot_nodes(graph: Any, node: Any, slot: str, dims: list[int], dtype: int) -> list[Any]:
    """x·A·B added to the node's output; A and B become inputs defaulting to rank 0."""
    import numpy as np
    from onnx import helper, numpy_helper

    x, y = node.input[0], node.output[0]
    node.output[0] = f"{y}/base"
    a, b = f"{slot}.lora_A", f"{slot}.lora_B"
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    rank = f"{slot}.rank"  # one name per slot: onnxruntime plans buffers as if equal names match
    graph.input.extend(
        [
            helper.make_tensor_value_info(a, dtype, [dims[0], rank]),
            helper.make_tensor_value_info(b, dtype, [rank, dims[1]]),
        ]
    )
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.zeros((dims[0], 0), np_type), a),
            numpy_helper.from_array(np.zeros((0, dims[1]), np_type), b),
        ]
    )
    prefix = f"/{slot}/lora"
    return [
        helper.make_node("MatMul", [x, a], [f"{prefix}/xa"], name=f"{prefix}/MatMul_A"),
        helper.make_node(
            "MatMul", [f"{prefix}/xa", b], [f"{prefix}/xab"], name=f"{prefix}/MatMul_B"
        ),
        helper.make_node("Add", [f"{y}/base", f"{prefix}/xab"], [y], name=f"{prefix}/Add"),
    ]
