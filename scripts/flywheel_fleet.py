"""One flywheel turn as it runs in the field, every party its own process, in one command.

    python scripts/flywheel_fleet.py [--devices 3] [--out DIR] [--epochs N] [--max-steps N]

1. a host process serves ingest + the TUF adapter repository over HTTPS on 127.0.0.1;
2. N device processes (each its own EDGE_AGENT_HOME) enroll with one-time tokens, and their
   sealed logs receive their share of the committed HA *train* split as turns a teacher
   answered (escalations: the teacher's call is the label);
3. each device anonymizes and pushes its log (`edge-agent sync --once`);
4. the host curates what it ingested, clusters it, fine-tunes a LoRA on the same GGUF the
   devices run, gates it through llama.cpp on the committed *test* split and publishes it,
   signed, in its TUF repository (`edge-agent host train --from-store --eval split --publish`);
5. each device pulls it (TUF-verified), runs its canary set, hot-swaps it in, and answers
   "turn on the kitchen light" with it.

Prints base vs adapter on the test split and the minutes of each stage; writes
``DIR/fleet.json``. Nothing here talks to the network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EDGE = [sys.executable, "-m", "edge_agent"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "flywheel-fleet")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-steps", type=int, default=None, help="stop training early (smoke)")
    ap.add_argument("--limit", type=int, default=None, help="seed only N train rows (smoke)")
    ap.add_argument("--model", default=None, help="base GGUF path (default: the catalog default)")
    ap.add_argument(
        "--eval",
        default="split",
        choices=["split", "curated"],
        help="gate on the committed HA test split, or on held-out synced turns",
    )
    ap.add_argument("--margin", type=float, default=0.02, help="exact-match gain to promote")
    # the shipped home adapter's recipe (scripts/bench/results/flywheel.md)
    ap.add_argument("--first-layer", type=int, default=18)
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--canary-min", type=float, default=None, help="devices' canary floor")
    ap.add_argument("--context-size", type=int, default=None, help="every party's context")
    ap.add_argument(
        "--ship",
        action="store_true",
        help="put the published adapter into the package (edge_agent/data/adapters)",
    )
    ap.add_argument("--seed-part", nargs=2, type=int, metavar=("I", "N"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# --- the device's log: its share of the train split, as teacher-answered turns -----------------


def seed_device_log(part: int, parts: int, limit: int | None) -> int:
    """Run inside a device's environment: write its rows into its sealed log."""
    from edge_agent.logstore import open_log
    from edge_agent.settings import Settings
    from edge_agent.skills.home.dataset import load_split

    rows = load_split("train")[:limit] if limit else load_split("train")
    mine = [row for i, row in enumerate(rows) if i % parts == part]
    log = open_log(Settings())
    try:
        log.record_many(teacher_turn(row) for row in mine)
    finally:
        log.close()
    return len(mine)


def teacher_turn(row: Any) -> tuple[Any, Any]:
    """What the device logs when it escalated `row` and the teacher answered with its call."""
    from edge_agent.host.curate import record_from_row
    from edge_agent.prompt import messages_for
    from edge_agent.skills.home.toolset import home_toolset
    from edge_agent.types import AgentResult, ToolOutcome

    record, toolset = record_from_row(row), _toolset(home_toolset)
    call = record.call
    assert call is not None  # committed rows always carry their call
    outcome = ToolOutcome(call=call, effect=toolset.get(call.name).effect_of(call.arguments),
                          status="ok")  # fmt: skip
    result = AgentResult(request=row.sentence, tool_calls=[outcome], route="escalated",
                         model="SmolLM2-135M-Instruct.Q4_1.gguf", steps=1)  # fmt: skip
    return result, messages_for(row.sentence, toolset, context=record.context, adapted=True)


_TOOLSETS: dict[str, Any] = {}


def _toolset(factory: Any) -> Any:
    return _TOOLSETS.setdefault("home", factory())


# --- processes ---------------------------------------------------------------------------------


class Party:
    """One process's environment: its own EDGE_AGENT_HOME, offline, log keyed by a file."""

    def __init__(self, home: Path, **settings: object) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        chosen = {f"EDGE_AGENT_{k.upper()}": str(v) for k, v in settings.items() if v is not None}
        self.env = os.environ | chosen | {
            "EDGE_AGENT_HOME": str(home), "EDGE_AGENT_OFFLINE": "1",
            "EDGE_AGENT_LOG_KEY_SOURCE": "file", "EDGE_AGENT_SYNC_ENABLED": "true",
            "EDGE_AGENT_THREADS": "1", "OMP_NUM_THREADS": "1",
        }  # fmt: skip

    def run(self, *args: str, timeout: float | None = None, ok: Sequence[int] = (0,)) -> str:
        done = subprocess.run([*EDGE, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip
        if done.returncode not in ok:
            raise SystemExit(f"{self.home.name}: edge-agent {' '.join(args)} failed:\n"
                             f"{done.stderr.strip()}")  # fmt: skip
        return done.stdout

    def start(self, *args: str) -> subprocess.Popen[str]:
        log = (self.home / "serve.log").open("w")
        return subprocess.Popen([*EDGE, *args], env=self.env, stdout=log, stderr=log, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, server: subprocess.Popen[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the host process exited; see its serve.log")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise SystemExit(f"the host did not listen on port {port} within {timeout_s:.0f} s")


# --- the turn ----------------------------------------------------------------------------------


class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.host = Party(args.out / "host", context_size=args.context_size)
        device = {"model": args.model, "adapters_canary_min": args.canary_min,
                  "context_size": args.context_size}  # fmt: skip
        self.devices = [Party(args.out / f"device-{i}", **device) for i in range(args.devices)]
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.minutes: dict[str, float] = {}

    def timed(self, stage: str, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        value = fn(*args)
        self.minutes[stage] = round((time.perf_counter() - started) / 60, 2)
        print(f"[{self.minutes[stage]:6.2f} min] {stage}", flush=True)
        return value

    def enroll(self) -> None:
        for device in self.devices:
            line = self.host.run("host", "enroll-token", "--url", self.url).split()
            device.run("sync", "enroll", *line[3:])

    def seed(self) -> list[int]:
        script, n = str(Path(__file__).resolve()), len(self.devices)
        limit = ["--limit", str(self.args.limit)] if self.args.limit else []
        procs = [subprocess.Popen([sys.executable, script, "--seed-part", str(i), str(n), *limit],
                                  env=d.env, stdout=subprocess.PIPE, text=True)
                 for i, d in enumerate(self.devices)]  # fmt: skip
        outputs = [p.communicate()[0] for p in procs]
        if any(p.returncode != 0 for p in procs):
            raise SystemExit("seeding a device's log failed")
        return [int(out.split()[-1]) for out in outputs]

    def push(self) -> list[dict[str, Any]]:
        return [json.loads(d.run("sync", "--once", "--json")) for d in self.devices]

    def train(self) -> dict[str, Any]:
        a = self.args
        options = {"--epochs": a.epochs, "--max-steps": a.max_steps, "--model": a.model,
                   "--first-layer": a.first_layer, "--margin": a.margin, "--eval": a.eval,
                   "--learning-rate": a.learning_rate, "--rank": a.rank, "--alpha": a.alpha,
                   "--batch-size": a.batch_size}  # fmt: skip
        extra = [str(x) for k, v in options.items() if v is not None for x in (k, v)]
        out = self.host.run("host", "train", "--from-store", "--publish",
                            "--out", str(a.out / "turn"), "--json", *extra)  # fmt: skip
        return dict(json.loads(out))

    def pull(self) -> list[dict[str, Any]]:
        # exit 4: the device's canary rejected the release (reported, not fatal)
        return [json.loads(d.run("adapters", "pull", "home", "--json", ok=(0, 4)) or "{}")
                for d in self.devices]  # fmt: skip

    def ask(self) -> list[dict[str, Any]]:
        return [json.loads(d.run("run", "turn on the kitchen light", "--json"))
                for d in self.devices]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seed_part:
        print(seed_device_log(*args.seed_part, args.limit))
        return 0
    fleet = Fleet(args)
    server = fleet.host.start("host", "serve", "--host", "127.0.0.1", "--port", str(fleet.port))
    try:
        wait_for_port(fleet.port, server)
        report = run_turn(fleet)
    finally:
        server.terminate()
        server.wait(timeout=30)
    (args.out / "fleet.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    if args.ship and report["turn"].get("published"):
        print(f"shipped {ship(args.out, report)}")
    return 0


def ship(out: Path, report: dict[str, Any]) -> Path:
    """The published adapter, into the package, with its release (centroids, canary) and
    the measured results beside it."""
    from edge_agent.adapters.shipped import write_shipped
    from edge_agent.host.publish import AdapterRepository

    turn = report["turn"]
    repo = AdapterRepository(out / "host" / "data" / "host" / "tuf")
    release = next(r for r in repo.releases() if r.name == turn["published"])
    dest = Path(__file__).resolve().parents[1] / "edge_agent/data/adapters/home-smollm2-135m.gguf"
    provenance = {
        "made_by": "scripts/flywheel_fleet.py", "training": turn["train"], "data": turn["data"],
        "metrics": {"split": "HA test (217 rows), llama.cpp, grammar + jump-forward",
                    "adapter": turn["candidate"], "base": turn["incumbent"]},
        "minutes": report["minutes"], "release": release.model_dump(mode="json"),
    }  # fmt: skip
    return write_shipped(Path(turn["adapter"]), dest, name="home", skill="home",
                         base_identity=release.base_identity, provenance=provenance)  # fmt: skip


def run_turn(fleet: Fleet) -> dict[str, Any]:
    fleet.timed("enroll", fleet.enroll)
    fleet.timed("seed logs", fleet.seed)
    pushed = fleet.timed("sync", fleet.push)
    turn = fleet.timed("host turn", fleet.train)
    pulled = fleet.timed("pull", fleet.pull)
    answers = fleet.timed("ask", fleet.ask)
    return {"minutes": fleet.minutes | {"total": round(sum(fleet.minutes.values()), 2)},
            "pushed": pushed, "turn": turn, "pulled": pulled, "answers": answers}  # fmt: skip


def print_report(report: dict[str, Any]) -> None:
    turn = report["turn"]
    base, new = turn["incumbent"], turn["candidate"]
    print(f"base     right tool {base['right_tool']:.1%}  exact {base['exact']:.1%}")
    print(f"adapter  right tool {new['right_tool']:.1%}  exact {new['exact']:.1%}")
    print(f"minutes  {report['minutes']}")


if __name__ == "__main__":
    raise SystemExit(main())
