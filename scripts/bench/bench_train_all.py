"""`host train --all` wall time: two tiny skills trained in this process one after another
against the same two jobs on a local Ray (2 CPUs, 1 per job), publishing both each time.

Rows, each from a fresh adapter repository over the same store (tests' thermostat and
dimmer skills, 40 turns each, the tiny random llama of tests/tinymodel.py):
  * in-process, torch on 1 thread (TrainConfig's default on a 2-core box) and on 2 threads;
  * Ray: `ray.init(num_cpus=2)` (start-up), the jobs (submit → both published) on fresh
    workers, the same jobs again on those (now warm) workers, shutdown.
One untimed in-process run first (this process's imports); each Ray repetition starts a
fresh cluster, whose workers import torch and llama.cpp on their first job (part of "jobs
(fresh workers)", what one `host train --all --ray local` pays).
Repetitions are interleaved, medians reported. The machine is shared: expect noise.

    .venv/bin/python scripts/bench/bench_train_all.py [--steps 1] [--reps 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_agent.host.finetune import TrainConfig  # noqa: E402
from edge_agent.host.jobs import InProcess, JobResources, RayRunner  # noqa: E402
from edge_agent.host.publish import AdapterRepository  # noqa: E402
from edge_agent.host.train_all import TrainAllOptions, publish_with, train_all  # noqa: E402
from tests.host.flywheel_support import (  # noqa: E402
    dimmer,
    host_store,
    ingest,
    thermostat,
    thermostat_turns,
)
from tests.host.test_train_all import dimmer_turns  # noqa: E402
from tests.tinymodel import make_tiny_llama  # noqa: E402


def run(home: Path, model: Path, runner: Any, config: TrainConfig, tag: str) -> float:
    """Seconds for one `train_all` of both skills, publishing into a fresh repository."""
    repo = AdapterRepository.init(home / f"tuf-{tag}")
    options = TrainAllOptions(home / f"runs-{tag}", model, config, margin=-1.0, min_train=5)
    store = host_store(home)
    started = time.perf_counter()
    try:
        done = train_all(store, repo, runner, options, publisher=publish_with(repo, model))
    finally:
        store.close()
    seconds = time.perf_counter() - started
    if [o.status for o in done] != ["published", "published"]:
        raise SystemExit(f"{tag}: {[o.line() for o in done]}")
    return seconds


def on_ray(home: Path, model: Path, config: TrainConfig, tag: str) -> dict[str, float]:
    import ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    init = time.perf_counter() - started
    with RayRunner("local", JobResources(cpus=1, retries=0)) as runner:
        cold = run(home, model, runner, config, f"{tag}-cold")
        warm = run(home, model, runner, config, f"{tag}-warm")  # the same workers again
    started = time.perf_counter()
    ray.shutdown()
    return {"init": init, "jobs (fresh workers)": cold, "jobs (warm workers)": warm,
            "shutdown": time.perf_counter() - started}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1, help="training steps per skill")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a throwaway local cluster: no token in ~/.ray
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        os.environ["EDGE_AGENT_HOME"] = str(home / "edge-home")
        model = make_tiny_llama(home, context=4096).gguf_path
        store = host_store(home)
        ingest(store, thermostat_turns(40) + dimmer_turns(40), [thermostat(), dimmer()])
        store.close()
        rows = measure(home, model, args.steps, args.reps)
    report(rows, args)


def measure(home: Path, model: Path, steps: int, reps: int) -> dict[str, list[float]]:
    config = TrainConfig(max_steps=steps, rank=2, batch_size=2)
    run(home, model, InProcess(), config, "warm-up")  # this process's imports, untimed
    rows: dict[str, list[float]] = {}
    for rep in range(reps):
        for threads in (1, 2):
            config = TrainConfig(max_steps=steps, rank=2, batch_size=2, threads=threads)
            seconds = run(home, model, InProcess(), config, f"seq{threads}-{rep}")
            rows.setdefault(f"in-process, {threads} thread(s)", []).append(seconds)
        config = TrainConfig(max_steps=steps, rank=2, batch_size=2)
        for part, seconds in on_ray(home, model, config, f"ray-{rep}").items():
            rows.setdefault(f"ray local 2 CPUs: {part}", []).append(seconds)
    return rows


def report(rows: dict[str, list[float]], args: argparse.Namespace) -> None:
    medians = {name: round(statistics.median(v), 2) for name, v in rows.items()}
    if args.json:
        print(json.dumps({"steps": args.steps, "reps": args.reps, "median_s": medians,
                          "runs_s": rows, "cpus": os.cpu_count()}, indent=2))  # fmt: skip
        return
    print(f"two tiny skills, {args.steps} step(s) each, median of {args.reps}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    for name, value in medians.items():
        print(f"  {name:<44} {value:7.2f} s")


if __name__ == "__main__":
    main()
