"""Sentence embeddings on the device: an exported ONNX encoder run with onnxruntime, no torch.

A folder made by `quantize.embedder.export_embedder` holds ``model.onnx``, ``tokenizer.json``
and ``embedder.json``; `Embedder.open` checks both files against the sha256 in
``embedder.json`` before onnxruntime or the tokenizer parses a byte of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import InvalidModelFileError

__all__ = ["Embedder", "EmbedderSpec", "sha256_file"]

SPEC_FILE = "embedder.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
_POOLINGS = ("mean", "cls")
_REEXPORT = "re-export it with `edge-agent host embedder export`"


@dataclass(frozen=True)
class EmbedderSpec:
    """What ``embedder.json`` promises about the folder's model."""

    name: str
    dim: int
    max_length: int
    pooling: str
    sha256: str
    tokenizer_sha256: str | None = None
    normalize: bool = True
    inputs: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")

    @classmethod
    def read(cls, folder: Path) -> EmbedderSpec:
        path = folder / SPEC_FILE
        try:
            raw = json.loads(path.read_text())
            spec = cls(
                name=str(raw["name"]), dim=int(raw["dim"]), max_length=int(raw["max_length"]),
                pooling=str(raw["pooling"]), sha256=str(raw["sha256"]).lower(),
                tokenizer_sha256=raw.get("tokenizer_sha256"),
                normalize=bool(raw.get("normalize", True)),
                inputs=tuple(raw.get("inputs", cls.inputs)),
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise InvalidModelFileError(f"{path} is missing: {_REEXPORT}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidModelFileError(
                f"{path} is not a valid embedder spec ({exc}): {_REEXPORT}"
            ) from exc
        if spec.pooling not in _POOLINGS or spec.dim <= 0 or spec.max_length <= 0:
            raise InvalidModelFileError(f"{path}: unsupported pooling/dim/max_length: {_REEXPORT}")
        return spec


class Embedder:
    """L2-normalised sentence embeddings, batched; one intra-op thread unless told otherwise."""

    def __init__(self, session: Any, tokenizer: Any, spec: EmbedderSpec, batch_size: int) -> None:
        self.session, self.tokenizer, self.spec = session, tokenizer, spec
        self.batch_size = max(1, batch_size)

    @classmethod
    def open(cls, folder: Path | str, *, threads: int = 1, batch_size: int = 32) -> Embedder:
        folder = Path(folder)
        spec = EmbedderSpec.read(folder)
        _verify(folder / MODEL_FILE, spec.sha256)
        if spec.tokenizer_sha256:
            _verify(folder / TOKENIZER_FILE, spec.tokenizer_sha256)
        session = _session(folder / MODEL_FILE, threads)
        _check_io(session, spec, folder)
        return cls(session, _tokenizer(folder / TOKENIZER_FILE, spec.max_length), spec, batch_size)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dim(self) -> int:
        return self.spec.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32; texts are batched by length so padding stays small."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._embed_batch([texts[i] for i in idx])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": mask,
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        hidden = self.session.run(None, {k: feeds[k] for k in self.spec.inputs})[0]
        pooled = _pool(hidden, mask, self.spec.pooling)
        if self.spec.normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled


def _pool(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    if pooling == "cls":
        return np.asarray(hidden[:, 0, :], dtype=np.float32)
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    return np.asarray(summed / np.maximum(weights.sum(axis=1), 1e-9), dtype=np.float32)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> None:
    if not path.is_file():
        raise InvalidModelFileError(f"{path} is missing: {_REEXPORT}")
    if sha256_file(path) != expected.lower():
        raise InvalidModelFileError(
            f"{path} does not match the sha256 in {SPEC_FILE} (corrupt or replaced): {_REEXPORT}"
        )


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise InvalidModelFileError(f"onnxruntime cannot load {path} ({exc}): {_REEXPORT}") from exc


def _check_io(session: Any, spec: EmbedderSpec, folder: Path) -> None:
    names = {i.name for i in session.get_inputs()}
    width = session.get_outputs()[0].shape[-1]
    if names != set(spec.inputs) or (isinstance(width, int) and width != spec.dim):
        raise InvalidModelFileError(
            f"{folder / MODEL_FILE} takes {sorted(names)} and gives width {width}, but "
            f"{SPEC_FILE} says {list(spec.inputs)} and dim {spec.dim}: {_REEXPORT}"
        )


def _tokenizer(path: Path, max_length: int) -> Any:
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for unreadable JSON
        raise InvalidModelFileError(f"cannot read {path} ({exc}): {_REEXPORT}") from exc
    tokenizer.enable_truncation(max_length)
    pad = tokenizer.padding or {"pad_id": tokenizer.token_to_id("[PAD]") or 0}
    token = pad.get("pad_token") or tokenizer.id_to_token(pad["pad_id"]) or "[PAD]"
    tokenizer.enable_padding(pad_id=pad["pad_id"], pad_token=token)  # to the longest, not fixed
    return tokenizer
