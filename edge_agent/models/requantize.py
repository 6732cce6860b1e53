"""llama.cpp's own quantizer (``llama_model_quantize``), for the device and for the host.

A device builds a catalog entry whose source is ``package_requantize`` from a packaged GGUF in
about a second: llama.cpp dequantizes each tensor and quantizes it again. Q4_0 is worth it on
CPUs: llama.cpp repacks Q4_0 weights at load time into interleaved blocks for AVX2/AVX-512
(and ARM NEON), so a prompt is evaluated ~3x faster than from the packaged Q4_1 here
(scripts/bench/results/turn.md).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from edge_agent.errors import QuantizeError

# Quantization name -> llama.cpp's LLAMA_FTYPE_* value (llama.h).
LLAMA_FTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18,
}  # fmt: skip


def requantize_gguf(
    source: Path, path: Path, quantization: str, *, threads: int = 1, from_quantized: bool = False
) -> Path:
    """``source`` quantized to ``quantization`` at ``path``, written whole or not at all.
    ``from_quantized``: the source is itself quantized (llama.cpp's ``allow_requantize``)."""
    import llama_cpp

    from edge_agent.models import llama_log  # noqa: F401  (llama.cpp's log into logging)

    if quantization.upper() not in LLAMA_FTYPES:
        known = ", ".join(LLAMA_FTYPES)
        raise QuantizeError(f"unknown GGUF quantization {quantization!r}; choose one of: {known}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPES[quantization.upper()]
    params.nthread = threads
    params.allow_requantize = from_quantized
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(partial).encode(), ctypes.byref(params)
    )
    if status != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise QuantizeError(
            f"llama.cpp could not quantize {source.name} to {quantization} (status {status}); "
            "check the source GGUF and the free disk space"
        )
    partial.replace(path)  # a reader never sees half a model
    return path
