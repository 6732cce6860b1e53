"""Measure one model variant in a fresh process: size, peak RAM, decode speed, perplexity and
Home Assistant tool-call accuracy with the ``home`` adapter.

Each variant runs in its own process (``python -m quantize.measure``) so that its peak RSS is
its own: Python, the model, its runtime library and a 64-token decode at the given context,
read right after that decode (perplexity and the HA evaluation come later and do not count).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import QuantizeError

__all__ = ["Metrics", "measure", "measure_here", "size_mb"]

DECODE_PROMPT = "Tell me a long story about a dragon who learns to fly."
DECODE_TOKENS = 64
PERPLEXITY_TOKENS = 512


@dataclass(frozen=True)
class Metrics:
    size_mb: float
    peak_rss_mb: float
    decode_tok_s: float
    perplexity: float
    ha_rows: int = 0  # 0: no adapter for this base, accuracy not measured
    ha_right_tool: float | None = None
    ha_exact: float | None = None
    ha_slot_f1: float | None = None
    ha_p50_ms: float | None = None


def measure(
    backend: str, path: Path, *, rows: int = 40, threads: int = 1, n_ctx: int = 2048
) -> Metrics:
    """Run ``measure_here`` in a child process and return what it reports."""
    command = [
        sys.executable, "-m", "quantize.measure", backend, str(path),
        "--rows", str(rows), "--threads", str(threads), "--n-ctx", str(n_ctx),
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise QuantizeError(f"measuring {path.name} failed: {reason}")
    return Metrics(**json.loads(lines[-1]))


def measure_here(backend_kind: str, path: Path, *, rows: int, threads: int, n_ctx: int) -> Metrics:
    """Measure in this process (the child's side of ``measure``)."""
    from edge_agent.backends import open_backend

    backend: Any = open_backend(backend_kind, model_path=path, n_ctx=n_ctx, n_threads=threads)
    with backend:
        speed = _decode_speed(backend)
        peak = _peak_rss_mb()
        # The text as one user message in the model's chat template, cut to what fits.
        ids = backend.tokenize_prompt([{"role": "user", "content": _text()}])
        ids = ids[: min(PERPLEXITY_TOKENS, backend.n_ctx - 1)]
        ha = _ha_accuracy(backend, rows)
    perplexity = _perplexity(backend_kind, path, ids, threads)
    return Metrics(size_mb=size_mb(path), peak_rss_mb=peak, decode_tok_s=speed,
                   perplexity=perplexity, **ha)  # fmt: skip


def _decode_speed(backend: Any, runs: int = 3) -> float:
    """Tokens per second after the first token, greedy, best of ``runs`` (a shared machine
    only ever makes a run slower, so the best one is the least disturbed)."""
    from edge_agent.backends import GenerationRequest
    from edge_agent.types import Message

    request = GenerationRequest(
        messages=[Message(role="user", content=DECODE_PROMPT)], max_tokens=DECODE_TOKENS
    )
    best = 0.0
    for _ in range(runs):
        backend.clear_cache()
        done = backend.complete(request)
        seconds = done.timings.decode_ms / 1000
        if seconds > 0:
            best = max(best, (done.usage.completion_tokens - 1) / seconds)
    return best


def _peak_rss_mb() -> float:
    """This process image's peak RSS. Linux's ru_maxrss survives fork + exec (a child would
    report its parent's peak), so VmHWM, which exec resets, is read where it exists."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def _text() -> str:
    return files("quantize").joinpath("data/perplexity.txt").read_text(encoding="utf-8")


def _perplexity(backend_kind: str, path: Path, ids: list[int], threads: int) -> float:
    """exp(mean negative log-likelihood) of each token given the ones before it."""
    logits = _all_logits(backend_kind, path, ids, threads)
    shifted = logits[:-1] - logits[:-1].max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    picked = shifted[np.arange(len(ids) - 1), ids[1:]]
    return float(math.exp(float(np.mean(log_norm - picked))))


def _all_logits(backend_kind: str, path: Path, ids: list[int], threads: int) -> np.ndarray:
    if backend_kind == "onnx":
        from edge_agent.backends.onnx import OnnxBackend

        onnx = OnnxBackend(path, n_ctx=len(ids) + 1, n_threads=threads)
        try:
            return onnx.token_logits(ids)
        finally:
            onnx.close()
    import llama_cpp

    import edge_agent.backends.llama_cpp  # noqa: F401  (quiet llama.cpp's log)

    llm = llama_cpp.Llama(
        str(path), n_ctx=len(ids) + 1, n_threads=threads, logits_all=True, verbose=False
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def _ha_accuracy(backend: Any, rows: int) -> dict[str, Any]:
    """The first ``rows`` of the HA test split with the shipped ``home`` adapter, if this base
    has one (an adapter belongs to the base identity, so every variant of it gets the same)."""
    from edge_agent.adapters.shipped import adapter_for
    from edge_agent.skills.home.dataset import load_split
    from edge_agent.skills.home.evaluate import evaluate

    shipped = adapter_for("home", backend.identity)
    if shipped is None or rows <= 0:
        return {}
    backend.load_adapter("home", shipped.verified_path())
    backend.use_adapter("home")
    summary = evaluate(backend, load_split("test")[:rows], adapter="home").summary()
    return {
        "ha_rows": int(summary["n"]),
        "ha_right_tool": summary["right_tool"],
        "ha_exact": summary["exact"],
        "ha_slot_f1": summary["slot_f1"],
        "ha_p50_ms": summary["p50_ms"],
    }


def size_mb(path: Path) -> float:
    """A file's size, or a model folder's total, in MiB."""
    files_ = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files_) / (1024 * 1024)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("backend", choices=["llama_cpp", "onnx"])
    parser.add_argument("path", type=Path)
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args(argv)
    metrics = measure_here(
        args.backend, args.path, rows=args.rows, threads=args.threads, n_ctx=args.n_ctx
    )
    print(json.dumps(asdict(metrics)))


if __name__ == "__main__":
    main()
