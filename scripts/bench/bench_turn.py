"""A home turn beside raw llama-cpp-python writing the same tokens: issue 16's "measure first".

    .venv/bin/python scripts/bench/bench_turn.py [--limit 60] [--threads 2,1] [--json]

For each thread count, in ONE process and interleaved row by row over the HA test split:
  agent  edge_agent.runtime.open_runtime (default SmolLM2-135M Q4_1, the shipped `home`
         adapter), an agent of the `home` skill on the row's own simulated home with the
         row's speaker area, ``run()`` with the defaults `edge-agent run` gets (4 steps,
         one repair, stop after the call), logging on (a fresh EDGE_AGENT_HOME);
  raw    ``llama_cpp.Llama`` on the same GGUF, the same adapter through llama.cpp's LoRA
         API, the same n_ctx/threads/batch/KV type, replaying every generation of the
         agent's turn: the agent's exact messages rendered by the same chat template and
         tokenized by llama.cpp, its own prefix cache (so the same cache state as the agent:
         both saw the same prompts in the same order), then the agent's output tokens, one
         ``eval`` per token with a greedy pick before each: what the raw model costs to
         evaluate that prompt and write that text. No grammar, no jump-forward.
The ratio is agent ÷ raw per row (issue 16's target: ≤ 0.8). The agent's side is broken
down per stage by wrapping, from the outside, the functions each stage runs (no package
edits); the per-token grammar check is inside the sampler and is timed with it.
Also: exact-call accuracy on the rows, peak RSS, and the cold start of `edge-agent run`
(process → validated call, a fresh subprocess) with `python -X importtime` of the CLI.
Results go to scripts/bench/results/turn.md and turn.json (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from turn_report import STAGES, machine, render, write  # this script's folder

RESULTS = Path(__file__).resolve().parent / "results"
COLD_COMMAND = ("turn on the kitchen light", "Kitchen")

# -- the agent side, instrumented from the outside ---------------------------------------------


@dataclass
class Gen:
    """One generation of a turn as the backend saw it."""

    messages: list[Any]
    out: list[int] = field(default_factory=list)
    usage: Any = None
    ms: float = 0.0


class Probe:
    """Per-turn time and counts of each stage, gathered by wrappers around the functions."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.n: dict[str, int] = defaultdict(int)
        self.gens: list[Gen] = []
        self.first_eval = False

    def timed(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.ms[key] += (time.perf_counter() - t0) * 1000
                self.n[key] += 1

        return wrapper

    def evals(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """The first eval of a generation is the prompt (with any text forced first)."""

        def wrapper(tokens: Any) -> Any:
            key = "prompt_eval" if self.first_eval else "decode_eval"
            self.first_eval = False
            self.n[f"{key}_tokens"] += len(tokens)
            return self.timed(key, fn)(tokens)

        return wrapper

    def forced(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            step = self.timed("jump", fn)(*args)
            self.n["forced_tokens"] += len(step.tokens) if step is not None else 0
            return step

        return wrapper

    def generations(self, fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        from edge_agent.backends.base import Done

        def wrapper(request: Any) -> Iterator[Any]:
            gen = Gen(list(request.messages))
            self.gens.append(gen)
            self.first_eval = True
            t0 = time.perf_counter()
            for chunk in fn(request):
                gen.out.extend(chunk.token_ids)
                if isinstance(chunk, Done):
                    gen.usage = chunk.usage
                yield chunk
            gen.ms = (time.perf_counter() - t0) * 1000

        return wrapper


def instrument_modules(probe: Probe) -> None:
    """Wrap the stages the agent module and the sampler run (once per process)."""
    import edge_agent.agent as agent_module
    import edge_agent.prompt as prompt_module
    from edge_agent.backends import _llama_sampling

    sampler = _llama_sampling.Sampler
    sampler.sample = probe.timed("sample", sampler.sample)  # type: ignore[method-assign]
    prompt_module.parse_output = probe.timed("parse", prompt_module.parse_output)
    turn = agent_module.Turn
    turn._validated = probe.timed("validate", turn._validated)  # type: ignore[method-assign]
    agent_module.execute = probe.timed("tool", agent_module.execute)
    agent_module.turn_messages = probe.timed("prompt", agent_module.turn_messages)
    policy = agent_module.Policy  # pydantic: wrapped on the class, not the instance
    policy.decide_call = probe.timed("policy", policy.decide_call)  # type: ignore[method-assign]


def instrument_runtime(rt: Any, probe: Probe) -> None:
    """Wrap the backend's stages and the log; a hook the backend lacks is left out."""
    b = rt.backend
    b.generate = probe.generations(b.generate)
    for attr, key in [("tokenize_prompt", "tokenize"), ("_constraints", "grammar"),
                      ("_reuse_prefix", "prefix"), ("_logprob", "logprob")]:  # fmt: skip
        if hasattr(b, attr):
            setattr(b, attr, probe.timed(key, getattr(b, attr)))
    if hasattr(b, "_eval"):
        b._eval = probe.evals(b._eval)
    if hasattr(b, "_eval_outputs"):  # a batch with draft tokens (prompt lookup)
        outputs = b._eval_outputs
        b._eval_outputs = lambda tokens, n_out: probe.evals(lambda t: outputs(t, n_out))(tokens)
    if hasattr(b, "_forced"):
        b._forced = probe.forced(b._forced)
    log = rt.log()
    if log is not None:
        log.record = probe.timed("log", log.record)


def instrument_agent(agent: Any, probe: Probe) -> None:
    if agent.context is not None:
        agent.context = probe.timed("context", agent.context)
    if agent.toolset.split is not None:
        agent.toolset.split = probe.timed("split", agent.toolset.split)


# -- the raw side ------------------------------------------------------------------------------


class Raw:
    """llama-cpp-python alone, on the runtime's model, adapter and context settings."""

    def __init__(self, rt: Any, adapter_path: Path | None) -> None:
        import llama_cpp

        from edge_agent.backends.llama_cpp import KV_CACHE_TYPES

        b, opts = rt.backend, rt.plan.backend_options()
        kv = KV_CACHE_TYPES[getattr(b, "kv_cache_type", opts.get("kv_cache_type", "f16"))]
        self.llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=str(b._path), n_ctx=b.n_ctx, n_threads=opts["n_threads"],
            n_threads_batch=opts["n_threads"], n_batch=512, type_k=kv, type_v=kv,
            flash_attn=opts.get("flash_attn", False), use_mmap=opts.get("use_mmap", True),
            verbose=False,
        )  # fmt: skip
        self.adapter = None
        if adapter_path is not None:  # llama.cpp's LoRA API (Llama(lora_path=) turns mmap off)
            self.adapter = llama_cpp.llama_adapter_lora_init(
                self.llm.model, str(adapter_path).encode()
            )
            ptrs = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.adapter)
            llama_cpp.llama_set_adapters_lora(self.llm.ctx, ptrs, 1, (ctypes.c_float * 1)(1.0))
        self.greedy = llama_cpp.llama_sampler_init_greedy()
        self.render = b.render_prompt  # the same chat template text, rendered the same way
        bos = self.llm._model.token_bos()
        self.bos = self.llm._model.token_get_text(bos) if bos >= 0 else ""
        self.add_bos = bool(self.llm._model.add_bos_token())

    def replay(self, messages: list[Any], out: list[int], expected: list[int]) -> dict[str, Any]:
        """Render, tokenize, reuse the held prefix, evaluate the rest, then write ``out``."""
        t0 = time.perf_counter()
        text = self.render(messages)
        add_bos = self.add_bos and not (self.bos and text.startswith(self.bos))
        tokens = self.llm.tokenize(text.encode(), add_bos=add_bos, special=True)
        same = tokens == expected
        tokens = tokens if same else expected  # the agent's prompt, whatever tokenized it
        keep = _common_prefix(self.llm.input_ids[: self.llm.n_tokens], tokens)
        self.llm.n_tokens = keep  # Llama.eval drops the KV cache past n_tokens
        self.llm.eval(tokens[keep:])
        agree = 0
        for i, token in enumerate(out or [None]):
            pick = self.llama_cpp.llama_sampler_sample(self.greedy, self.llm.ctx, -1)
            agree += pick == token
            if token is not None and i < len(out) - 1:
                self.llm.eval([token])
        ms = (time.perf_counter() - t0) * 1000
        return {"ms": ms, "evaluated": len(tokens) - keep, "same_prompt": same, "agree": agree}

    def close(self) -> None:
        self.llama_cpp.llama_sampler_free(self.greedy)
        self.llm.close()


def _common_prefix(held: Any, prompt: list[int]) -> int:
    n = 0
    for a, b in zip(held, prompt, strict=False):
        if a != b:
            break
        n += 1
    return min(n, len(prompt) - 1)  # the last prompt token's logits pick the first output


# -- one pass: rows x (agent, raw) at one thread count -----------------------------------------


@dataclass
class Side:
    """One configuration under test: its runtime, its raw twin and what it measured."""

    label: str
    rt: Any
    raw: Raw
    config: Any  # the AgentConfig its agents run with
    measured: list[dict] = field(default_factory=list)
    preds: dict[str, Any] = field(default_factory=dict)


def run_pass(
    args: argparse.Namespace, rows: list[Any], threads: int, probe: Probe
) -> list[dict[str, Any]]:
    """Each configuration (before/after, or just the current one) on the same rows, row by
    row, their order alternating: one box state for all of them."""
    sides = [open_side(args, label, threads, probe) for label in configs(args)]
    skill = sides[0].rt.skill("home")
    for side in sides:
        one_row(side, probe, skill, rows[0])  # warm-up: pages, graphs; not counted
        side.measured.clear()
    started = time.perf_counter()
    for i, row in enumerate(rows):
        for side in sides if i % 2 == 0 else sides[::-1]:
            one_row(side, probe, skill, row)
        print(f"  threads {threads}: {i + 1}/{len(rows)} rows", file=sys.stderr)
        if args.pass_budget_s and time.perf_counter() - started > args.pass_budget_s:
            break  # a loaded box: the rows done so far, scored as such
    wall = time.perf_counter() - started
    return [close_side(side, rows, threads, wall) for side in sides]


def configs(args: argparse.Namespace) -> list[str]:
    return ["before", "after"] if args.compare else ["now"]


def open_side(args: argparse.Namespace, label: str, threads: int, probe: Probe) -> Side:
    """``before``: as this session started (n_ctx 4096, f16 KV without flash attention, a
    failed call sent back to the model); ``after``/``now``: the shipped defaults."""
    from edge_agent.adapters.shipped import adapter_for
    from edge_agent.agent import AgentConfig
    from edge_agent.runtime import open_runtime

    overrides: dict[str, Any] = {"threads": threads}
    overrides |= {"model": str(args.model)} if args.model else {}
    overrides |= {"context_size": args.context_size} if args.context_size else {}
    if label == "before":
        overrides |= {"context_size": args.context_size or 4096, "profile": "before",
                      "draft_tokens": 0, "profiles_dir": _before_profile()}  # fmt: skip
    rt = open_runtime(**overrides)
    adapter = rt.adapter_of("home")
    shipped = adapter_for("home", rt.backend.identity) if adapter else None
    raw = Raw(rt, shipped.verified_path() if shipped else None)
    instrument_runtime(rt, probe)
    config = AgentConfig(area=rt.settings.area, stop_after_call=adapter is not None,
                         turn_deadline_s=None)  # fmt: skip
    if label == "before":
        config = config.model_copy(update={"retry_failed_calls": True})
    return Side(label, rt, raw, config)


def _before_profile() -> Path:
    """generic-x86-64 as it was: KV cache in f16, flash attention off."""
    import re
    from importlib import resources

    text = (resources.files("device_profiles") / "generic-x86-64.toml").read_text()
    text = re.sub(r'kv_cache_type = "\w+"', 'kv_cache_type = "f16"', text)
    text = re.sub(r"flash_attention = \w+", "flash_attention = false", text)
    text = text.replace('name = "generic-x86-64"', 'name = "before"')
    folder = Path(tempfile.mkdtemp(prefix="bench-turn-profile-"))
    (folder / "before.toml").write_text(text)
    return folder


def close_side(side: Side, rows: list[Any], threads: int, wall: float) -> dict[str, Any]:
    from edge_agent.skills.home.score import score

    rt = side.rt
    meta = {"label": side.label, "threads": threads, "n_ctx": rt.plan.context_size,
            "adapter": rt.adapter_of("home"), "model": rt.model_name, "wall_s": wall,
            "kv_cache_type": rt.plan.backend_options().get("kv_cache_type"),
            "flash_attn": rt.plan.backend_options().get("flash_attn"),
            "draft_tokens": rt.plan.backend_options().get("draft_tokens", 0),
            "retry_failed_calls": side.config.retry_failed_calls,
            "rss_mb_loaded": _rss_mb()}  # fmt: skip
    side.raw.close()
    rt.close()
    done = [r for r in rows if r.id in side.preds]
    return summarize(side.measured, score(side.preds, done), meta)


def one_row(side: Side, probe: Probe, skill: Any, row: Any) -> None:
    from edge_agent.skills.home.evaluate import first_call
    from edge_agent.skills.home.toolset import home_toolset

    rt, raw = side.rt, side.raw
    agent = rt.agent(home_toolset(inventory=row.inventory()), skill=skill, config=side.config)
    instrument_agent(agent, probe)
    probe.reset()
    t0 = time.perf_counter()
    result = agent.run(row.sentence, area=row.speaker_area, confirmed=True)
    wall = (time.perf_counter() - t0) * 1000
    snap = Snapshot(dict(probe.ms), dict(probe.n), list(probe.gens))
    expected = [rt.backend.tokenize_prompt(g.messages) for g in snap.gens]  # outside timing
    replays = [raw.replay(g.messages, g.out, e) for g, e in zip(snap.gens, expected, strict=True)]
    side.measured.append(row_record(row, result, wall, snap, replays))
    side.preds[row.id] = first_call(result)


@dataclass
class Snapshot:
    ms: dict[str, float]
    n: dict[str, int]
    gens: list[Gen]


def row_record(row: Any, result: Any, wall: float, snap: Snapshot, replays: list[dict]) -> dict:
    ms, n, gens = snap.ms, snap.n, snap.gens
    out = sum(len(g.out) for g in gens)
    sampled = n.get("sample", 0)
    call_ms = wall - ms.get("tool", 0.0) - ms.get("log", 0.0)
    raw_ms = sum(r["ms"] for r in replays)
    return {
        "id": row.id,
        "agent_ms": wall,
        "call_ms": call_ms,  # request → validated call: the tool's run and the log excluded
        "generate_ms": sum(g.ms for g in gens),
        "raw_ms": raw_ms,
        "ratio": call_ms / raw_ms if raw_ms else None,
        "ratio_generate": sum(g.ms for g in gens) / raw_ms if raw_ms else None,
        "stages": {k: ms.get(k, 0.0) for k, _ in STAGES},
        "generations": len(gens),
        "steps": result.steps,
        "outcome": result.outcome,
        "prompt_tokens": sum(g.usage.prompt_tokens for g in gens if g.usage),
        "cached_tokens": sum(g.usage.cached_prompt_tokens for g in gens if g.usage),
        "prompt_eval_tokens": n.get("prompt_eval_tokens", 0),
        "decode_eval_calls": n.get("decode_eval", 0),
        "out_tokens": out,
        "forced_tokens": n.get("forced_tokens", 0),
        "sampled_tokens": sampled,
        "raw_prompt_eval_tokens": sum(r["evaluated"] for r in replays),
        "raw_same_prompt": all(r["same_prompt"] for r in replays),
        "raw_greedy_agrees": sum(r["agree"] for r in replays),
    }


def summarize(rows: list[dict], report: Any, meta: dict) -> dict[str, Any]:
    def q(key: str, p: float) -> float:
        values = sorted(r[key] for r in rows if r[key] is not None)
        return values[min(len(values) - 1, int(p * len(values)))] if values else 0.0

    mean = lambda key: statistics.fmean(r[key] for r in rows)  # noqa: E731
    stages = {k: {"mean_ms": statistics.fmean(r["stages"][k] for r in rows),
                  "p50_ms": statistics.median(r["stages"][k] for r in rows)}
              for k, _ in STAGES}  # fmt: skip
    keys = ["agent_ms", "call_ms", "generate_ms", "raw_ms", "ratio", "ratio_generate"]
    counts = ["prompt_tokens", "cached_tokens", "prompt_eval_tokens", "raw_prompt_eval_tokens",
              "out_tokens", "forced_tokens", "sampled_tokens", "decode_eval_calls",
              "generations", "raw_greedy_agrees"]  # fmt: skip
    return meta | {
        "rows": len(rows),
        "exact": report.exact_match,
        "right_tool": report.function_accuracy,
        "p50": {k: q(k, 0.5) for k in keys},
        "p95": {k: q(k, 0.95) for k in keys},
        "mean": {k: mean(k) for k in keys[:4]} | {k: mean(k) for k in counts},
        "stages": stages,
        "raw_prompt_mismatch_rows": sum(not r["raw_same_prompt"] for r in rows),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "per_row": rows,
    }


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- cold start in a fresh process -------------------------------------------------------------


def cold_starts(args: argparse.Namespace, threads: int) -> dict[str, dict[str, Any]]:
    """`edge-agent run` in a fresh process, per source tree (``--before-tree``: the code as
    it was, then this one), runs alternating: start → its output (printed once the call is
    validated and run), exit, and the child's peak RSS. Each tree's first run warms its home
    (the model's hash is checked once per home) and is not counted."""
    here = str(Path(__file__).resolve().parents[2])
    trees = {"before": str(args.before_tree), "after": here} if args.before_tree else {"now": here}
    homes = {label: tempfile.mkdtemp(prefix=f"bench-turn-cold-{label}-") for label in trees}
    text, area = COLD_COMMAND
    argv = [sys.executable, "-m", "edge_agent", "run", text, "--area", area, "--yes", "--json",
            "--threads", str(threads)]  # fmt: skip
    argv += ["--model", str(args.model)] if args.model else []
    argv += ["--context-size", str(args.context_size)] if args.context_size else []
    runs: dict[str, list[dict]] = {label: [] for label in trees}
    for rep in range(args.cold_reps + 1):
        for label, tree in trees.items():
            run = _time_child(argv, tree, homes[label])
            if rep:
                runs[label].append(run)
    return {label: _cold_summary(argv, threads, done) for label, done in runs.items()}


def _cold_summary(argv: list[str], threads: int, runs: list[dict]) -> dict[str, Any]:
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    return {"command": " ".join(["edge-agent", *argv[3:]]), "threads": threads,
            "reps": len(runs), "first_output_ms": med("first_ms"), "exit_ms": med("exit_ms"),
            "turn_latency_ms": med("latency_ms"), "peak_rss_mb": med("rss_mb"),
            "outcome": runs[-1]["outcome"], "runs": runs}  # fmt: skip


def _time_child(argv: list[str], tree: str, home: str) -> dict[str, Any]:
    env = dict(os.environ, EDGE_AGENT_HOME=home, PYTHONPATH=tree)
    start = time.perf_counter()
    # cwd: `python -m` puts the working folder first on sys.path, before PYTHONPATH
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=tree)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(1)
    first_ms = (time.perf_counter() - start) * 1000
    rest = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    exit_ms = (time.perf_counter() - start) * 1000
    try:  # a failed turn exits non-zero but still prints its result
        result = json.loads(first + rest)
    except ValueError:
        code = os.waitstatus_to_exitcode(status)
        raise SystemExit(f"{' '.join(argv)} failed ({code}): {err.decode()[-500:]}") from None
    return {"first_ms": first_ms, "exit_ms": exit_ms, "rss_mb": usage.ru_maxrss / 1024,
            "latency_ms": result.get("latency_ms"), "outcome": result.get("outcome")}  # fmt: skip


def import_time(args: argparse.Namespace, threads: int, top: int = 10) -> dict[str, Any]:
    """The cold command again under `python -X importtime`: its imports, lazy ones included,
    as the top-level entries (what the interpreter, the CLI and the command each pulled in)."""
    text, area = COLD_COMMAND
    argv = [sys.executable, "-X", "importtime", "-m", "edge_agent", "run", text, "--area", area,
            "--yes", "--json", "--threads", str(threads)]  # fmt: skip
    argv += ["--model", str(args.model)] if args.model else []
    argv += ["--context-size", str(args.context_size)] if args.context_size else []
    env = dict(os.environ, EDGE_AGENT_HOME=tempfile.mkdtemp(prefix="bench-turn-imports-"))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    entries = []
    for line in proc.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            entries.append((parts[2].strip(), int(parts[1]) / 1000))  # top level only
    heaviest = sorted(entries, key=lambda e: -e[1])[:top]
    return {"total_ms": sum(ms for _, ms in entries), "top": heaviest}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=60, help="first N rows of the split (0: all)")
    ap.add_argument("--threads", default="2,1", help="thread counts, each its own pass")
    ap.add_argument("--model", type=Path, default=None, help="GGUF; default: the fit plan's")
    ap.add_argument("--context-size", type=int, default=None)
    ap.add_argument(
        "--pass-budget-s",
        type=float,
        default=0.0,
        help="stop a thread count's pass after this many seconds (0: no limit)",
    )
    ap.add_argument("--cold-reps", type=int, default=3, help="0: skip the cold start")
    ap.add_argument(
        "--compare",
        action="store_true",
        help="run the configuration as it was (before) beside today's (after)",
    )
    ap.add_argument(
        "--before-tree",
        type=Path,
        default=None,
        help="a checkout of the code as it was, for the cold start's before",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for turn.md/turn.json")
    ap.add_argument("--json", action="store_true", help="print the JSON, not the table")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from edge_agent.skills.home.dataset import load_split

    os.environ["EDGE_AGENT_HOME"] = tempfile.mkdtemp(prefix="bench-turn-")  # a fresh log
    rows = load_split("test")
    rows = rows[: args.limit] if args.limit else rows
    threads = [int(t) for t in args.threads.split(",")]
    result: dict[str, Any] = {"machine": machine(), "rows": len(rows),
                              "load_start": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    # Cold start first, while this process is small (see bench_runtime.py on ru_maxrss).
    if args.cold_reps:
        result["cold"] = cold_starts(args, threads[0])
        result["importtime"] = import_time(args, threads[0])
    probe = Probe()
    instrument_modules(probe)
    result["passes"] = [side for t in threads for side in run_pass(args, rows, t, probe)]
    result["load_end"] = [round(x, 2) for x in os.getloadavg()]
    text = render(result)
    write(result, text, args.out)
    print(json.dumps(result, indent=1, default=str) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
