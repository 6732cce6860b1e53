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
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-steps", type=int, default=None, help="stop training early (smoke)")
    ap.add_argument("--context-size", type=int, default=None)
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
    """SNIPS as an OpenAI-client app: its tools with every request, its skill named."""

    def __init__(self, base_url: str, token: str, tools: list[dict[str, Any]]) -> None:
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0,
                                    timeout=600)  # fmt: skip
        self.tools = tools
        self.model = self.client.models.list().data[0].id  # the base model serve runs

    def ask(self, text: str, route: str = "auto") -> dict[str, Any]:
        started = time.perf_counter()
        reply = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": text}], tools=self.tools,
            extra_headers={"X-Edge-Agent-Skill": SKILL},
            extra_body={"edge_agent": {"route": route}},
        )  # fmt: skip
        ms = (time.perf_counter() - started) * 1000
        message = reply.choices[0].message
        call = message.tool_calls[0].function if message.tool_calls else None
        extra = (reply.model_extra or {}).get("edge_agent") or {}
        return {"name": call.name if call else None, "ms": ms, "turn": extra.get("turn") or {},
                "arguments": json.loads(call.arguments) if call else None}  # fmt: skip


def score(app: App, calls: list[dict[str, Any]], route: str) -> dict[str, Any]:
    from edge_agent.skills.skill import exact_call
    from edge_agent.types import ToolCall

    answers = [app.ask(c["text"], route) for c in calls]
    exact = [
        exact_call(ToolCall(name=a["name"], arguments=a["arguments"]) if a["name"] else None,
                   ToolCall(name=c["name"], arguments=c["arguments"]))
        for a, c in zip(answers, calls, strict=True)
    ]  # fmt: skip
    routes = [a["turn"].get("route", "local") for a in answers]
    tools = [a["name"] == c["name"] for a, c in zip(answers, calls, strict=True)]
    return {
        "n": len(calls), "exact": round(sum(exact) / len(calls), 4),
        "right_tool": round(sum(tools) / len(calls), 4),
        "local_share": round(routes.count("local") / len(calls), 4),
        "p50_ms": round(statistics.median(a["ms"] for a in answers), 1),
    }  # fmt: skip


# --- the run -------------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = args.out
        self.host = Party(self.out / "host", context_size=args.context_size)
        self.host_port, self.teacher_port, self.serve_port = free_port(), free_port(), free_port()
        self.device = Party(
            self.out / "device", model=args.model, context_size=args.context_size,
            remote_url=f"http://127.0.0.1:{self.teacher_port}/v1", remote_model=TEACHER_MODEL,
            remote_anonymize="false",  # the stand-in looks utterances up verbatim
            server_token="false",
        )  # fmt: skip
        (self.device.home / "config").mkdir(parents=True, exist_ok=True)
        (self.device.home / "config" / "config.toml").write_text(
            f'[skills.{SKILL}]\nroute = "teacher-first"\n'
        )
        self.minutes: dict[str, float] = {}

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
        server = self.device.start("serve", "--port", port, "--no-token")
        try:
            wait_for_port(self.serve_port, server, timeout_s=180)
            yield App(f"http://127.0.0.1:{port}/v1", "unused", data["tools"])
        finally:
            server.terminate()
            server.wait(timeout=60)

    def train(self) -> dict[str, Any]:
        a = self.args
        options = {"--epochs": a.epochs, "--max-steps": a.max_steps, "--model": a.model}
        extra = [str(x) for k, v in options.items() if v is not None for x in (k, v)]
        out = self.host.run("host", "train", "--skill", SKILL, "--from-store", "--publish",
                            "--out", str(self.out / "turn"), "--json", *extra)  # fmt: skip
        return dict(json.loads(out))


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str) if value is not None else ""
    return text if len(text) < 300 else text[:297] + "..."


def run(args: argparse.Namespace) -> dict[str, Any]:
    per_tool = {"train": args.train_per_tool, "val": args.val_per_tool}
    data = app_data(args.data, per_tool)
    gold = args.out / "teacher-gold.json"  # the stand-in teacher's knowledge, not the host's
    gold.write_text(json.dumps(data["train"] + data["val"]))
    r = Run(args)
    report: dict[str, Any] = {"data": {k: len(data[k]) for k in ("train", "val")}}
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
    base_sample = _per_tool(data["val"], r.args.base_per_tool)
    report: dict[str, Any] = {}
    with r.device_app(data) as app:
        report["base"] = r.timed("base model, SLM alone", score, app, base_sample, "local")
        report["day0"] = r.timed("day 0: teacher-first", score, app, data["train"], "auto")
    report["sync"] = r.timed("sync", lambda: json.loads(r.device.run("sync", "--once", "--json")))
    report["host"] = r.timed("host turn (train + gate + publish)", r.train)
    report["pull"] = r.timed("pull + canary", lambda: json.loads(
        r.device.run("adapters", "pull", SKILL, "--json", ok=(0, 4)) or "{}"))  # fmt: skip
    with r.device_app(data) as app:
        report["slm_alone"] = r.timed("day 1: SLM alone", score, app, data["val"], "local")
        report["routed"] = r.timed("day 1: routed", score, app, data["val"], "auto")
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
