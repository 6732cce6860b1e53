"""Catalog entries (the ``data/catalog.toml`` format) for built variants, with what was measured.

The measured numbers go into each entry's ``notes``, together with what the variant was made
from: a variant of a quantized GGUF is a requantization of its dequantized weights.
"""

from __future__ import annotations

import json
import platform
from typing import TYPE_CHECKING, Any

from edge_agent.models.catalog import CatalogEntry, load_catalog, parse_catalog
from edge_agent.models.gguf import sha256_file
from edge_agent.models.plan import entry_from_gguf
from quantize.measure import size_mb

if TYPE_CHECKING:
    from quantize.base import Base
    from quantize.pipeline import VariantResult

__all__ = ["catalog_text", "provenance"]

_FLOAT_SOURCES = ("F32", "F16", "BF16")


def provenance(base: Base) -> str:
    """One sentence on what every variant of ``base`` really is."""
    if base.source_quantization in _FLOAT_SOURCES:
        return f"quantized from the {base.source_quantization} weights of {base.source.name}"
    return (
        f"a requantization of the dequantized {base.source_quantization} weights of "
        f"{base.source.name} (the only weights available here), not of the original floats"
    )


def catalog_text(base: Base, results: list[VariantResult]) -> str:
    """TOML for every built variant (not the source), checked by the catalog's own parser."""
    template = _template(base)
    lines = [
        f"# Variants of {base.name} built by `edge-agent quantize` on {platform.machine()}.",
        f"# Every variant is {provenance(base)}.",
        "# Numbers in notes: measured here, 1 thread; HA = first rows of the HA test split",
        "# with the `home` adapter.",
        "",
    ]
    for result in results:
        if result.variant.name != "source":
            lines += [_toml(_entry(base, template, result)), ""]
    text = "\n".join(lines)
    parse_catalog(text, "generated variant catalog")
    return text


def _template(base: Base) -> CatalogEntry | None:
    """The shipped catalog's entry for the base file, else one read from the base GGUF."""
    for entry in load_catalog().entries:
        if entry.source.file and entry.source.file == base.source.name:
            return entry
    return entry_from_gguf(base.source) if base.source.is_file() else None


def _entry(base: Base, template: CatalogEntry | None, result: VariantResult) -> dict[str, Any]:
    variant, metrics = result.variant, result.metrics
    stem = template.name.rsplit("-", 1)[0] if template else base.name.lower()
    floats = base.source_quantization in _FLOAT_SOURCES
    suffix = "" if floats else f"-from-{base.source_quantization.lower()}"
    is_file = variant.path.is_file()
    return {
        "name": f"{stem}-{variant.name}{suffix}",
        "family": template.family if template else base.identity.architecture,
        "base_model": template.base_model if template else base.identity.base_name,
        "parameters": template.parameters if template else 0,
        "quantization": variant.quantization,
        "file_size_mb": round(metrics.size_mb if metrics else size_mb(variant.path), 1),
        "size_estimated": False,
        "license": template.license if template else "unknown",
        "sha256": sha256_file(variant.path) if is_file else "",
        "instruct": template.instruct if template else True,
        "notes": _notes(base, result),
        "source": {"kind": "path", "path": str(variant.path.resolve())},
        "arch": template.arch.model_dump() if template else _arch(base),
    }


def _notes(base: Base, result: VariantResult) -> str:
    runs_on = (
        "onnx backend (onnxruntime-genai)" if result.variant.backend == "onnx" else "llama.cpp"
    )
    text = f"runs on {runs_on}; {provenance(base)}"
    m = result.metrics
    if m is None:
        return text + "; not measured"
    text += (
        f"; measured: peak RSS {m.peak_rss_mb:.0f} MB, decode {m.decode_tok_s:.1f} tok/s, "
        f"perplexity {m.perplexity:.2f}"
    )
    if m.ha_rows and m.ha_right_tool is not None and m.ha_exact is not None:
        text += f", HA right tool {m.ha_right_tool:.1%} / exact {m.ha_exact:.1%} ({m.ha_rows} rows)"
    return text


def _arch(base: Base) -> dict[str, int]:
    config, ident = base.config, base.identity
    return {
        "n_layer": ident.n_layer,
        "n_embd": ident.n_embd,
        "n_head": ident.n_head,
        "n_head_kv": ident.n_head_kv,
        "head_dim": int(config.get("head_dim") or ident.n_embd // ident.n_head),
        "n_ff": ident.n_ff,
        "n_vocab": ident.n_vocab,
        "context_max": int(config.get("max_position_embeddings", 2048)),
    }


def _toml(entry: dict[str, Any]) -> str:
    lines = ["[[model]]"]
    for key, value in entry.items():
        lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string
