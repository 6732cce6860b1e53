"""An OpenAI-client app's own tools through the whole loop, every party its own process.

    python scripts/flywheel_skill.py [--train-per-tool 100] [--val-per-tool 100] [--out DIR]

The app: SNIPS (``../shared/data/toolcall_snips``, CC0), seven intents cast as seven tools
whose parameters are their slot names. It talks to ``edge-agent serve`` with the official
``openai`` client, sending its tools with every request and naming its skill ``snips``.

1. a host process serves ingest + the TUF adapter repository on 127.0.0.1; the device enrolls;
2. a STAND-IN TEACHER process (no large model runs here) serves an OpenAI-compatible
   ``/v1/chat/completions`` that answers each utterance with its gold SNIPS call; the device
   names it as its remote model, the ``snips`` skill routed ``teacher-first``;
3. base: the app's validation utterances, answered by the bare SLM (route forced local);
4. day 0: the app sends the training utterances; the teacher answers every one, the SLM's own
   attempt is logged beside it (shadow), the device anonymizes and syncs its log;
5. the host trains ``snips`` from the synced records alone (it never reads the dataset), gates
   on held-out teacher labels, publishes; the device pulls, verifies, canaries, activates;
6. day 1: the validation utterances again, once with the SLM alone (route local) and once
   routed as the device routes them (its calibration, if any; failures escalate).

Prints and writes ``DIR/skill.json``: exact calls (base, SLM alone, routed), share served
locally, p50 latency, teacher bytes and labels, host turn minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flywheel_fleet import Party, free_port, wait_for_port  # noqa: E402 - a sibling script

SNIPS = Path(__file__).resolve().parents[2] / "shared/data/toolcall_snips/raw"
SKILL = "snips"
TEACHER_MODEL = "stand-in-teacher"
# What the app's author wrote for each intent (SNIPS has no tool descriptions).
TOOLS = {
    "AddToPlaylist": "Adds a song, artist or album to one of the user's playlists.",
    "BookRestaurant": "Books a table at a restaurant.",
    "GetWeather": "Gets the weather forecast for a place and time.",
    "PlayMusic": "Plays music: a song, artist, album, genre or playlist, on a service.",
    "RateBook": "Rates a book or another written work.",
    "SearchCreativeWork": "Finds a creative work: a song, book, film, show, game or album.",
    "SearchScreeningEvent": "Finds movie showtimes and cinemas.",
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "flywheel-skill")
    ap.add_argument("--data", type=Path, default=SNIPS, help="SNIPS raw folder")
    ap.add_argument("--train-per-tool", type=int, default=100)
    ap.add_argument("--val-per-tool", type=int, default=100, help="at most 100 (SNIPS has 100)")
    ap.add_argument("--base-per-tool", type=int, default=20, help="base model sample per tool")
    ap.add_argument("--model", default=None, help="base GGUF path (default: the catalog default)")
    # the shipped home adapter's recipe (scripts/bench/results/flywheel.md), not tuned here
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--first-layer", type=int, default=18)
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=None, help="stop training early (smoke)")
    ap.add_argument("--context-size", type=int, default=None)
    ap.add_argument("--app", choices=["snips", "mcp", "entry-point"], default="snips",
                    help="SNIPS over client tools=, or the thermostat skill from config: an "
                    "MCP server, or a Python entry point")  # fmt: skip
    ap.add_argument("--per-phrase", type=int, default=12, help="thermostat: calls per phrasing")
    ap.add_argument("--margin", type=float, default=None, help="the host gate's margin")
    ap.add_argument("--canary-min", type=float, default=None, help="the device's canary floor")
    ap.add_argument("--teacher", nargs=2, metavar=("PORT", "GOLD"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# --- the app's data: SNIPS as tools and calls --------------------------------------------------


def read_intent(path: Path) -> list[dict[str, Any]]:
    """One SNIPS file as [{text, slots}] (SOURCE.md: one file needs surrogatepass)."""
    raw = path.read_text(encoding="utf-8", errors="surrogatepass")
    data = json.loads(raw.encode("utf-16", "surrogatepass").decode("utf-16"))
    rows = []
    for utterance in next(iter(data.values())):
        parts = utterance["data"]
        slots = [(p["entity"], p["text"].strip()) for p in parts if "entity" in p]
        rows.append({"text": "".join(p["text"] for p in parts).strip(), "slots": slots})
    return rows


def app_data(folder: Path, per_tool: dict[str, int], seed: int = 0) -> dict[str, Any]:
    """Tools (one per intent, its slot names as optional strings) and train/val calls."""
    tools, parts = [], {"train": [], "val": []}  # type: dict[str, list[dict[str, Any]]]
    for intent, description in TOOLS.items():
        train = read_intent(folder / intent / f"train_{intent}_full.json")
        val = read_intent(folder / intent / f"validate_{intent}.json")
        slots = sorted({name for row in train + val for name, _ in row["slots"]})
        tools.append(_tool_spec(intent, description, slots))
        seen = {_key(r["text"]) for r in val}
        train = _unique([r for r in train if _key(r["text"]) not in seen])
        random.Random(seed).shuffle(train)
        parts["train"] += [_call(intent, r) for r in train[: per_tool["train"]]]
        parts["val"] += [_call(intent, r) for r in _unique(val)[: per_tool["val"]]]
    return {"tools": tools, **parts}


def _tool_spec(intent: str, description: str, slots: list[str]) -> dict[str, Any]:
    properties = {s: {"type": "string", "description": s.replace("_", " ")} for s in slots}
    parameters = {"type": "object", "properties": properties, "required": []}
    return {"type": "function", "function": {"name": intent, "description": description,
                                             "parameters": parameters}}  # fmt: skip


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Duplicates and utterances naming one slot twice (a list value; 61 of 13,784) out."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        names = [n for n, _ in row["slots"]]
        if _key(row["text"]) not in seen and len(names) == len(set(names)):
            seen.add(_key(row["text"]))
            kept.append(row)
    return kept


def _call(intent: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"text": row["text"], "name": intent, "arguments": dict(row["slots"])}


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


# --- the stand-in teacher: answers with the gold call -----------------------------------------


def serve_teacher(port: int, gold_path: Path) -> None:
    """A STAND-IN for the large model: looks the user's utterance up in the gold calls."""
    gold = {_key(c["text"]): c for c in json.loads(gold_path.read_text())}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            payload = json.dumps(_teacher_reply(body, gold)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _teacher_reply(body: dict[str, Any], gold: dict[str, dict[str, Any]]) -> dict[str, Any]:
    messages = body.get("messages", [])
    if messages and messages[-1].get("role") == "tool":  # the tool ran: the loop ends here
        message: dict[str, Any] = {"role": "assistant", "content": "Done."}
    else:
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        found = gold.get(_key(str(user).split("\n\n")[0]))
        message = _as_message(found)
    usage = {"prompt_tokens": 200, "completion_tokens": 20, "total_tokens": 220}
    return {"id": "chatcmpl-standin", "object": "chat.completion", "model": TEACHER_MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage}  # fmt: skip


def _as_message(found: dict[str, Any] | None) -> dict[str, Any]:
    if found is None:
        return {"role": "assistant", "content": "I can't help with that."}
    function = {"name": found["name"], "arguments": json.dumps(found["arguments"])}
    call = {"id": "call_standin", "type": "function", "function": function}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


# --- the app: the official openai client against `edge-agent serve` ---------------------------


class App:
    """An app on the device's server, through the official openai client. With ``tools``:
    an OpenAI-client app sending its own tools (the client would run them) and naming its
    skill; without: a skill the device runs itself, asked through its ``edge-agent/NAME``
    model (the server runs the calls)."""

    def __init__(self, base_url: str, skill: str, tools: list[dict[str, Any]] | None) -> None:
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0,
                                    timeout=600)  # fmt: skip
        self.skill, self.tools = skill, tools
        base = self.client.models.list().data[0].id  # the base model serve runs
        self.model = base if tools else f"edge-agent/{skill}"

    def ask(self, text: str, route: str = "auto") -> dict[str, Any]:
        started = time.perf_counter()
        extra: dict[str, Any] = {"tools": self.tools} if self.tools else {}
        reply = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": text}],
            extra_headers={"X-Edge-Agent-Skill": self.skill},
            extra_body={"edge_agent": {"route": route}}, **extra,
        )  # fmt: skip
        ms = (time.perf_counter() - started) * 1000
        info = (reply.model_extra or {}).get("edge_agent") or {}
        return {"call": _first_call(reply, info), "ms": ms, "route": info.get("route", "local"),
                "adapter": info.get("adapter")}  # fmt: skip


def _first_call(reply: Any, info: dict[str, Any]) -> dict[str, Any] | None:
    """The call the turn made: the client's tool_call, or the first the server ran."""
    message = reply.choices[0].message
    if message.tool_calls:
        fn = message.tool_calls[0].function
        return {"name": fn.name, "arguments": json.loads(fn.arguments)}
    ran = info.get("tool_calls") or []
    return dict(ran[0]["call"]) if ran else None


def score(app: App, calls: list[dict[str, Any]], route: str) -> dict[str, Any]:
    from edge_agent.skills.skill import exact_call
    from edge_agent.types import ToolCall

    answers = [app.ask(c["text"], route) for c in calls]
    got = [ToolCall(**a["call"]) if a["call"] else None for a in answers]
    gold = [ToolCall(name=c["name"], arguments=c["arguments"]) for c in calls]
    exact = [exact_call(g, t) for g, t in zip(got, gold, strict=True)]
    tools = [g is not None and g.name == t.name for g, t in zip(got, gold, strict=True)]
    routes = [a["route"] for a in answers]
    return {
        "n": len(calls), "exact": round(sum(exact) / len(calls), 4),
        "right_tool": round(sum(tools) / len(calls), 4),
        "local_share": round(routes.count("local") / len(calls), 4),
        "p50_ms": round(statistics.median(a["ms"] for a in answers), 1),
        "adapters": sorted({str(a["adapter"]) for a in answers}),
    }  # fmt: skip


# --- the thermostat app: a skill the device runs itself (MCP server, or Python entry point) ----

APPS = Path(__file__).resolve().parent / "apps"
# Rooms and phrasings of the validation part never occur in training: held out whole.
ROOMS = {"train": ["kitchen", "bedroom", "living room", "office", "bathroom", "attic"],
         "val": ["nursery", "garage", "hallway"]}  # fmt: skip
PHRASES = {
    "train": [("set_temperature", "set the {room} to {t} degrees"),
              ("set_temperature", "set {room} temperature to {t}"),
              ("set_temperature", "please set the {room} heating to {t} degrees"),
              ("read_sensor", "what is the temperature in the {room}"),
              ("read_sensor", "read the {room} sensor")],
    "val": [("set_temperature", "could you set the {room} to {t} degrees celsius"),
            ("set_temperature", "{room} temperature {t} please, set it"),
            ("read_sensor", "how warm is the {room}"),
            ("read_sensor", "check the {room} temperature")],
}  # fmt: skip


def thermostat_data(per_phrase: int, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    parts: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    for part, phrases in PHRASES.items():
        for name, phrase in phrases:
            for _ in range(per_phrase):
                room, t = rng.choice(ROOMS[part]), rng.randint(15, 26)
                args = {"room": room, "celsius": t} if name == "set_temperature" else {"name": room}
                parts[part].append({"text": phrase.format(room=room, t=t), "name": name,
                                    "arguments": args})  # fmt: skip
        parts[part] = list({_key(c["text"]): c for c in parts[part]}.values())
    return {"tools": None, **parts}


def install_entry_point(site: Path) -> None:
    """`apps/thermostat_skill.py` as a real installed distribution declaring the skill."""
    info = site / "thermostat_app-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thermostat-app\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[edge_agent.skills]\nthermostat = thermostat_skill:skill\n"
    )


def skill_config(app: str, device_home: Path) -> str:
    """The device's config.toml: the skill it runs, routed teacher-first."""
    table = f'[skills.{app_skill(app)}]\nroute = "teacher-first"\n'
    if app == "mcp":
        command = json.dumps([sys.executable, str(APPS / "thermostat_mcp.py")])
        table += f"mcp_command = {command}\nmcp_env = {{ THERMOSTAT_STATE = " \
                 f"{json.dumps(str(device_home / 'thermostat.json'))} }}\n"  # fmt: skip
    return table


def app_skill(app: str) -> str:
    return SKILL if app == "snips" else "thermostat"


# --- the run -------------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = args.out
        self.skill = app_skill(args.app)
        self.host = Party(self.out / "host", context_size=args.context_size)
        self.host_port, self.teacher_port, self.serve_port = free_port(), free_port(), free_port()
        self.device = Party(
            self.out / "device", model=args.model, context_size=args.context_size,
            remote_url=f"http://127.0.0.1:{self.teacher_port}/v1", remote_model=TEACHER_MODEL,
            remote_anonymize="false",  # the stand-in looks utterances up verbatim
            server_token="false", adapters_canary_min=args.canary_min,
        )  # fmt: skip
        # offline = no network at all (HF_HUB_OFFLINE too); the teacher is on 127.0.0.1
        self.device.env |= {"EDGE_AGENT_OFFLINE": "0"}
        self._configure_device()
        self.minutes: dict[str, float] = {}

    def _configure_device(self) -> None:
        home = self.device.home
        (home / "config").mkdir(parents=True, exist_ok=True)
        (home / "config" / "config.toml").write_text(skill_config(self.args.app, home))
        state = home / "thermostat.json"
        state.write_text(json.dumps({r: 20 for part in ROOMS.values() for r in part}))
        self.device.env["THERMOSTAT_STATE"] = str(state)
        if self.args.app == "entry-point":
            site = home / "site"
            install_entry_point(site)
            path = os.pathsep.join([str(site), str(APPS), self.device.env.get("PYTHONPATH", "")])
            self.device.env["PYTHONPATH"] = path.rstrip(os.pathsep)

    def timed(self, stage: str, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        value = fn(*args)
        self.minutes[stage] = round((time.perf_counter() - started) / 60, 2)
        print(f"[{self.minutes[stage]:6.2f} min] {stage}: {_brief(value)}", flush=True)
        return value

    def enroll(self) -> None:
        url = f"https://127.0.0.1:{self.host_port}"
        line = self.host.run("host", "enroll-token", "--url", url).split()
        self.device.run("sync", "enroll", *line[3:])

    @contextmanager
    def device_app(self, data: dict[str, Any]) -> Iterator[App]:
        """`edge-agent serve` on the device, and the app talking to it."""
        port = str(self.serve_port)
        server = self.device.start("serve", "--port", port, "--no-token",
                                   "--toolsets", self.skill)  # fmt: skip
        try:
            wait_for_port(self.serve_port, server, timeout_s=180)
            yield App(f"http://127.0.0.1:{port}/v1", self.skill, data["tools"])
        finally:
            server.terminate()
            server.wait(timeout=60)

    def train(self) -> dict[str, Any]:
        a = self.args
        options = {"--epochs": a.epochs, "--max-steps": a.max_steps, "--model": a.model,
                   "--margin": a.margin, "--first-layer": a.first_layer,
                   "--learning-rate": a.learning_rate, "--batch-size": a.batch_size}  # fmt: skip
        extra = [str(x) for k, v in options.items() if v is not None for x in (k, v)]
        out = self.host.run("host", "train", "--skill", self.skill, "--from-store", "--publish",
                            "--out", str(self.out / "turn"), "--json", *extra)  # fmt: skip
        return dict(json.loads(out))

    def pull(self) -> dict[str, Any]:
        # exit 4: the device's canary rejected the release (reported, not fatal)
        out = self.device.run("adapters", "pull", self.skill, "--json", ok=(0, 4))
        return dict(json.loads(out or "{}"))

    def route_report(self) -> dict[str, Any]:
        out = self.device.run("route", "report", "--skill", self.skill, "--json", ok=(0, 1, 2))
        try:
            return dict(json.loads(out))
        except ValueError:
            return {"unavailable": out[-300:]}


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str) if value is not None else ""
    return text if len(text) < 300 else text[:297] + "..."


def load_app(args: argparse.Namespace) -> dict[str, Any]:
    if args.app == "snips":
        return app_data(args.data, {"train": args.train_per_tool, "val": args.val_per_tool})
    return thermostat_data(args.per_phrase)


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = load_app(args)
    gold = args.out / "teacher-gold.json"  # the stand-in teacher's knowledge, not the host's
    gold.write_text(json.dumps(data["train"] + data["val"]))
    r = Run(args)
    report: dict[str, Any] = {"app": args.app, "skill": r.skill,
                              "data": {k: len(data[k]) for k in ("train", "val")}}  # fmt: skip
    teacher = subprocess.Popen([sys.executable, __file__, "--teacher", str(r.teacher_port),
                                str(gold)])  # fmt: skip
    host = r.host.start("host", "serve", "--host", "127.0.0.1", "--port", str(r.host_port))
    try:
        wait_for_port(r.host_port, host)
        report |= _turn(r, data)
    finally:
        for proc in (host, teacher):
            proc.terminate()
            proc.wait(timeout=30)
    report["minutes"] = r.minutes
    return report


def _turn(r: Run, data: dict[str, Any]) -> dict[str, Any]:
    r.timed("enroll", r.enroll)
    report: dict[str, Any] = {}
    with r.device_app(data) as app:
        base = _per_tool(data["val"], r.args.base_per_tool)
        report["base"] = r.timed("base model, SLM alone", score, app, base, "local")
        report["day0"] = r.timed("day 0: teacher-first", score, app, data["train"], "auto")
    report["sync"] = r.timed("sync", lambda: json.loads(r.device.run("sync", "--once", "--json")))
    report["host"] = r.timed("host turn (train + gate + publish)", r.train)
    report["pull"] = r.timed("pull + canary", r.pull)
    with r.device_app(data) as app:
        report["slm_alone"] = r.timed("day 1: SLM alone", score, app, data["val"], "local")
        report["routed"] = r.timed("day 1: routed", score, app, data["val"], "auto")
    report["route_report"] = r.route_report()
    return report


def _per_tool(calls: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    kept = []
    for call in calls:
        if counts.get(call["name"], 0) < n:
            counts[call["name"]] = counts.get(call["name"], 0) + 1
            kept.append(call)
    return kept


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.teacher:
        serve_teacher(int(args.teacher[0]), Path(args.teacher[1]))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    report = run(args)
    (args.out / "skill.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("base", "slm_alone", "routed", "minutes")
                      if k in report}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
