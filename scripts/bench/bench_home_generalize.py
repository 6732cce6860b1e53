"""Does the `home` adapter generalize? Exact and state-scored accuracy on five sets:

  ha_test            the committed HA split's test part (each row in its own fixture home)
  heldout_homes      held-out synthetic homes x training templates
  heldout_templates  training homes x held-out templates (phrasings never trained on)
  heldout_both       held-out homes x held-out templates
  handwritten        hand-written user-style commands over a held-out home
                     (scripts/bench/data/home_handwritten.jsonl)

    python scripts/bench/bench_home_generalize.py [--adapter PATH | --base] [--n 100]
        [--sets ha_test,heldout_both,...] [--threads 1] [--out FILE.json]

Default adapter: the shipped one. Each command runs through the agent (llama.cpp, grammar on)
on a simulated copy of its home; state-scored = same home state and answer as the gold call
(edge_agent/skills/home/state_score.py). Prints one line per set and writes per-intent numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edge_agent.models.catalog import load_catalog
from edge_agent.models.store import ModelStore
from edge_agent.skills.home import synth
from edge_agent.skills.home.dataset import load_split
from edge_agent.skills.home.state_score import Item, evaluate_state

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "edge_agent/data/adapters/home-smollm2-135m.gguf"
HANDWRITTEN = Path(__file__).resolve().parent / "data/home_handwritten.jsonl"
SETS = ("ha_test", "heldout_homes", "heldout_templates", "heldout_both", "handwritten")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", type=Path, default=SHIPPED)
    ap.add_argument("--base", action="store_true", help="no adapter")
    ap.add_argument("--n", type=int, default=100, help="commands per synthetic set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kv-cache-type", default="q8_0", help="as CPU profiles ship (f16: before)")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args()


def handwritten() -> list[synth.Command]:
    lines = HANDWRITTEN.read_text(encoding="utf-8").splitlines()
    return [synth.Command.model_validate_json(line) for line in lines if line.strip()]


def items_of(name: str, n: int, seed: int) -> list[Item]:
    if name == "ha_test":
        return list(load_split("test"))
    if name == "handwritten":
        return list(handwritten())
    if name in ("heldout_homes", "heldout_templates", "heldout_both"):
        return list(synth.split(seed, n)[name])
    raise SystemExit(f"unknown set {name!r}; choose from {', '.join(SETS)}")


def main() -> int:
    from edge_agent.backends.llama_cpp import LlamaCppBackend

    args = parse_args()
    adapter = None if args.base else args.adapter
    if adapter is not None and not adapter.exists():
        print(f"no adapter at {adapter}", file=sys.stderr)
        return 2
    model_path = ModelStore(Path("/tmp/bench-home-models")).ensure(load_catalog().default())
    results: dict[str, Any] = {"adapter": str(adapter) if adapter else None, "sets": {}}
    kv = {"kv_cache_type": args.kv_cache_type, "flash_attn": args.kv_cache_type != "f16"}
    with LlamaCppBackend(model_path, n_ctx=4096, n_threads=args.threads, **kv) as backend:
        name = None
        if adapter is not None:
            name = "candidate"
            backend.load_adapter(name, adapter)
            backend.use_adapter(name)
        for set_name in args.sets.split(","):
            items = items_of(set_name, args.n, args.seed)
            started = time.perf_counter()
            report = evaluate_state(backend, items, adapter=name)
            s = report.summary()
            minutes = (time.perf_counter() - started) / 60
            rows = [{"id": r.id, "intent": r.intent, "exact": r.exact, "state": r.state,
                     "call": r.predicted.model_dump(exclude={"id"}) if r.predicted else None}
                    for r in report.rows]  # fmt: skip
            results["sets"][set_name] = s | {
                "per_intent": report.per_intent(),
                "minutes": minutes,
                "rows": rows,
            }
            print(f"{set_name:18} n={s['n']:4}  exact {s['exact']:.1%}  state {s['state']:.1%}"
                  f"  p50 {s['p50_ms']:.0f} ms", flush=True)  # fmt: skip
            if args.out:
                args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
