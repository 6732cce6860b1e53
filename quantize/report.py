"""The variants table, as Markdown: what `edge-agent quantize` prints and the benchmark writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quantize.pipeline import VariantResult

__all__ = ["markdown_table"]

_HEADER = (
    "| variant | runtime | size MB | peak RSS MB | decode tok/s | perplexity "
    "| HA right tool | HA exact |\n|---|---|---:|---:|---:|---:|---:|---:|"
)
_RUNTIME = {"llama_cpp": "llama.cpp", "onnx": "onnxruntime-genai"}


def markdown_table(results: Sequence[VariantResult]) -> str:
    rows = [_HEADER]
    for result in results:
        v, m = result.variant, result.metrics
        name = f"{v.quantization} (source)" if v.name == "source" else v.quantization
        if m is None:
            rows.append(f"| {name} | {_RUNTIME[v.backend]} | | | | | | |")
            continue
        right = f"{m.ha_right_tool:.1%}" if m.ha_right_tool is not None else "–"
        exact = f"{m.ha_exact:.1%}" if m.ha_exact is not None else "–"
        rows.append(
            f"| {name} | {_RUNTIME[v.backend]} | {m.size_mb:.1f} | {m.peak_rss_mb:.0f} "
            f"| {m.decode_tok_s:.1f} | {m.perplexity:.2f} | {right} | {exact} |"
        )
    return "\n".join(rows)
