"""Base → variants → measurements → catalog entries: what ``edge-agent quantize`` runs.

Variants are named like the catalog's quantizations: GGUF ones (``f16``, ``q8_0``,
``q4_k_m``, ...) are requantized by llama.cpp from an F32 GGUF of the base; ONNX ones
(``onnx-int4``, ``onnx-int8``, ``onnx-fp32``) come from onnxruntime-genai's builder. When the
base is itself a GGUF it is measured too, as the reference row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import QuantizeError
from quantize.base import Base, prepare_base
from quantize.catalog_entries import catalog_text
from quantize.gguf_variants import GGUF_TYPES, requantize, write_float_gguf
from quantize.measure import Metrics, measure
from quantize.onnx_variants import ONNX_PRECISIONS, build_onnx

__all__ = ["DEFAULT_VARIANTS", "Variant", "VariantResult", "known_variants", "run"]

DEFAULT_VARIANTS = ("f16", "q8_0", "q4_k_m", "q4_0", "onnx-int8", "onnx-int4")


@dataclass(frozen=True)
class Variant:
    name: str  # "q8_0", "onnx-int4", or "source" for the base GGUF itself
    backend: str  # the edge-agent backend kind that runs it
    quantization: str  # as the catalog spells it: "Q8_0", "ONNX_INT4", ...
    path: Path
    build_s: float = 0.0


@dataclass(frozen=True)
class VariantResult:
    variant: Variant
    metrics: Metrics | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self.variant) | {"path": str(self.variant.path)}
        return data | {"metrics": asdict(self.metrics) if self.metrics else None}


def known_variants() -> list[str]:
    return [q.lower() for q in GGUF_TYPES] + [f"onnx-{p}" for p in ONNX_PRECISIONS]


def run(
    source: Path,
    out_dir: Path,
    names: Sequence[str] = DEFAULT_VARIANTS,
    *,
    measure_them: bool = True,
    rows: int = 40,
    threads: int = 1,
    progress: bool = True,
) -> list[VariantResult]:
    """Build every named variant of ``source`` into ``out_dir``, measure each (and the source
    GGUF), and write ``variants.json`` and ``catalog.toml`` there."""
    _check_names(names)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _bar(len(names) + 1, "build", progress) as step:
        base = prepare_base(source, out_dir / "work")
        step("base")
        variants = [_build(base, out_dir, name, threads, step) for name in names]
    if base.source.is_file():
        variants.insert(0, Variant("source", "llama_cpp", base.source_quantization, base.source))
    results = [VariantResult(v, None) for v in variants]
    if measure_them:
        with _bar(len(variants), "measure", progress) as step:
            results = [_measured(v, rows, threads, step) for v in variants]
    _write(out_dir, base, results)
    return results


def _check_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in known_variants()]
    if unknown or not names:
        raise QuantizeError(
            f"unknown variant(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from: {', '.join(known_variants())}"
        )


def _build(base: Base, out_dir: Path, name: str, threads: int, step: Any) -> Variant:
    started = time.perf_counter()
    stem = base.name.lower().replace(" ", "-")
    if name.startswith("onnx-"):
        precision = name.removeprefix("onnx-")
        path = build_onnx(base, out_dir / f"{stem}-{name}", precision, threads=threads)
        variant = Variant(name, "onnx", f"ONNX_{precision.upper()}", path)
    else:
        path = _gguf(base, out_dir, stem, name.upper(), threads)
        variant = Variant(name, "llama_cpp", name.upper(), path)
    step(name)
    return Variant(**(asdict(variant) | {"build_s": round(time.perf_counter() - started, 1)}))


def _gguf(base: Base, out_dir: Path, stem: str, quantization: str, threads: int) -> Path:
    path = out_dir / f"{stem}-{quantization.lower()}.gguf"
    if quantization in ("F32", "F16"):
        return write_float_gguf(base, path, dtype=quantization.lower())
    f32 = out_dir / "work" / f"{stem}-f32.gguf"  # llama.cpp's quantizer starts from floats
    if not f32.is_file():
        write_float_gguf(base, f32)
    return requantize(f32, path, quantization, threads=threads)


def _measured(variant: Variant, rows: int, threads: int, step: Any) -> VariantResult:
    metrics = measure(variant.backend, variant.path, rows=rows, threads=threads)
    step(variant.name)
    return VariantResult(variant, metrics)


def _write(out_dir: Path, base: Base, results: list[VariantResult]) -> None:
    report = {
        "base": {"name": base.name, "source": str(base.source),
                 "source_quantization": base.source_quantization,
                 "identity": base.identity.as_dict()},
        "variants": [r.to_dict() for r in results],
    }  # fmt: skip
    (out_dir / "variants.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "catalog.toml").write_text(catalog_text(base, results))


@contextmanager
def _bar(total: int, what: str, show: bool) -> Iterator[Any]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=what, unit="variant", disable=not show)

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1)

    try:
        yield step
    finally:
        bar.close()
