"""Server overhead benchmark: the same agent turns through ``Agent.run`` and through the server.

One backend and one Agent in this process serve both paths; the server runs in a thread on
127.0.0.1 and is called with the official openai client (``model="edge-agent/<tools>"``).
Requests alternate between the two paths so drift (thermal, caches) hits both alike; the
overhead is reported per pair (server minus direct) and as the difference of medians.

The real default model is used when it can generate; the check runs in a child process,
because a broken llama.cpp build dies of SIGILL rather than raising. Otherwise a fake backend
with a fixed latency stands in, and the report says so.

    .venv/bin/python scripts/bench/bench_server.py [--n 60] [--tools home] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

COMMANDS = [
    "turn on the kitchen light",
    "turn off the living room lights",
    "is the front door locked",
    "set the bedroom light to 30 percent",
    "close the garage door",
    "what is the temperature in the living room",
    "turn on the fan",
    "open the blinds in the office",
]
_PROBE = """
import sys
from edge_agent.backends.base import GenerationRequest
from edge_agent.types import Message
from edge_agent.backends.llama_cpp import LlamaCppBackend
b = LlamaCppBackend(sys.argv[1], n_ctx=512)
r = GenerationRequest(messages=[Message(role="user", content="hi " * 40)], max_tokens=4)
b.complete(r)
"""


def default_model_path(models_dir: Path) -> Path:
    from edge_agent.models.catalog import load_catalog
    from edge_agent.models.store import ModelStore

    return ModelStore(models_dir).ensure(load_catalog().default())


def model_works(path: Path) -> str | None:
    """None when the model generates in a child process, else why not."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if proc.returncode == 0:
        return None
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return f"exit {proc.returncode}: {tail}"


class FakeBackend:
    """Answers every request after a fixed delay, like a model of known latency."""

    @staticmethod
    def make(delay_ms: float) -> Any:
        from edge_agent.backends.base import Backend, Chunk, Done, GenerationRequest
        from edge_agent.types import Usage

        class _Fake(Backend):
            def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
                time.sleep(delay_ms / 1000)
                yield Done('{"answer": "ok"}', usage=Usage(prompt_tokens=1, completion_tokens=5))

        return _Fake()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 2), "p95": round(p95, 2)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import openai

    from edge_agent.agent import Agent, AgentConfig
    from edge_agent.server.app import create_app, serve_in_thread
    from edge_agent.tools import get_toolset

    backend, model, note = open_backend(args)
    config = AgentConfig(stop_after_call=args.stop_after_call)
    agent = Agent(backend, get_toolset(args.tools), config=config)
    app = create_app(backend, toolsets={args.tools: agent}, model_name=model)
    with serve_in_thread(app) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
        model_id = f"edge-agent/{args.tools}"

        def via_server(text: str) -> Any:
            messages = [{"role": "user", "content": text}]
            return client.chat.completions.create(model=model_id, messages=messages)

        samples = measure(args, agent.run, via_server)
    backend.close()
    return report(args, model, note, samples)


def measure(
    args: argparse.Namespace, direct: Callable[[str], Any], server: Callable[[str], Any]
) -> dict[str, list[float]]:
    """Alternate the paths on the same commands; `inside` is the agent's own latency as the
    server measured it, so server minus inside is HTTP, JSON and queueing alone."""
    samples: dict[str, list[float]] = {"direct": [], "server": [], "inside": []}
    for i in range(args.warmup + args.n):
        text = COMMANDS[i % len(COMMANDS)]
        order = [("direct", direct), ("server", server)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            ms, out = timed(lambda fn=fn, text=text: fn(text))
            if i < args.warmup:
                continue
            samples[name].append(ms)
            if name == "server":
                samples["inside"].append(out.model_extra["edge_agent"]["latency_ms"])
    return samples


def open_backend(args: argparse.Namespace) -> tuple[Any, str, str]:
    if args.fake_ms is None:
        path = args.model or default_model_path(Path(tempfile.mkdtemp(prefix="bench-server-")))
        problem = model_works(path)
        if problem is None:
            from edge_agent.backends.llama_cpp import LlamaCppBackend
            from edge_agent.models.catalog import load_catalog

            backend = LlamaCppBackend(path, n_ctx=args.ctx, n_threads=args.threads)
            return backend, load_catalog().default().name, "real model"
        note = f"the real model could not generate ({problem}); fake backend of 50 ms instead"
        return FakeBackend.make(50.0), "fake", note
    return FakeBackend.make(args.fake_ms), "fake", f"fake backend of {args.fake_ms:g} ms"


def report(
    args: argparse.Namespace, model: str, note: str, samples: dict[str, list[float]]
) -> dict[str, Any]:
    direct, served, inside = samples["direct"], samples["server"], samples["inside"]
    pairs = [s - d for s, d in zip(served, direct, strict=True)]
    http_only = [s - i for s, i in zip(served, inside, strict=True)]
    return {
        "model": model,
        "backend": note,
        "toolset": args.tools,
        "n": len(direct),
        "direct_ms": percentiles(direct),
        "server_ms": percentiles(served),
        "overhead_ms": {
            "per_pair": percentiles(pairs),
            "p50_difference": round(statistics.median(served) - statistics.median(direct), 2),
            "outside_agent": percentiles(http_only),
        },
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"model {result['model']} ({result['backend']}), toolset {result['toolset']}, "
          f"n={result['n']}")  # fmt: skip
    for key in ("direct_ms", "server_ms"):
        print(f"  {key:<28} p50 {result[key]['p50']:>9.2f}   p95 {result[key]['p95']:>9.2f}")
    over = result["overhead_ms"]
    for key in ("per_pair", "outside_agent"):
        label = f"overhead_ms.{key}"
        print(f"  {label:<28} p50 {over[key]['p50']:>9.2f}   p95 {over[key]['p95']:>9.2f}")
    print(f"  {'overhead_ms.p50_difference':<28}     {over['p50_difference']:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="measured requests per path")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--tools", default="home")
    parser.add_argument("--model", type=Path, default=None, help="GGUF; default: the catalog's")
    parser.add_argument("--ctx", type=int, default=4096, help="home's prompt is ~2.3k tokens")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fake-ms", type=float, default=None, help="use a fake backend")
    parser.add_argument(
        "--no-stop-after-call", dest="stop_after_call", action="store_false",
        help="let the model answer after the call (two generations per turn)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
