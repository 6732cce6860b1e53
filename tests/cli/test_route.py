"""`edge-agent route calibrate|report|key` and `run --route`, in an isolated EDGE_AGENT_HOME."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edge_agent.backends.fake import ScriptedBackend
from edge_agent.routing.calibration import calibration_for
from edge_agent.routing.remote import KEYRING_SERVICE
from edge_agent.routing.router import Calibrations, SignalRecord
from edge_agent.settings import load_settings
from edge_agent.skills.home.dataset import split_ids
from edge_agent.types import (
    AgentResult,
    Effect,
    LocalAttempt,
    RouteSignals,
    Routing,
    ToolCall,
    ToolOutcome,
    Usage,
)
from tests.cli_support import run_cli
from tests.logstore_support import memory_keyring
from tests.teacher_support import stand_in_teacher


@pytest.fixture(autouse=True)
def key_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_LOG_KEY_SOURCE", "file")


def records(n: int = 40) -> list[SignalRecord]:
    return [
        SignalRecord(id=f"r{i}", correct=i % 5 != 0, latency_ms=100.0 + i,
                     signals=RouteSignals(min_logprob=-2.5 if i % 5 == 0 else -0.2 - i / 100))
        for i in range(n)
    ]  # fmt: skip


def test_report_with_nothing_yet(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "route", "report", "--json")
    assert code == 0 and json.loads(out) == {"calibration": None, "log": None, "skills": None}
    code, out, _ = run_cli(capsys, "route", "report")
    assert code == 0 and "route calibrate" in out


def test_report_plots_the_calibration_curve(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    calibration = calibration_for(records(), 0.97, model="m", adapter="home", skill="home")
    calibration.save(load_settings().route_path)
    png = tmp_path / "curve.png"
    code, out, _ = run_cli(capsys, "route", "report", "--json", "--plot", str(png))
    data = json.loads(out)["calibration"]["home"]
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["met"] and data["stats"]["accuracy"] >= 0.97
    assert data["stats"]["local_share"] == 0.8  # exactly the confident 32 of 40
    assert data["local_latency_ms"]["p50"] == 120.0
    curve = data["curve_min_logprob"]
    assert curve[0]["threshold"] is None and curve[0]["local_share"] == 1.0


def test_plot_without_calibration_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "route", "report", "--plot", "x.png")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def turn(route: str, local_args: dict[str, Any], teacher_args: dict[str, Any]) -> AgentResult:
    call = ToolCall(name="HassTurnOn", arguments=teacher_args)
    outcome = ToolOutcome(call=call, effect=Effect.ACTUATING, status="ok")
    local = LocalAttempt(model="smollm2", call=ToolCall(name="HassTurnOn", arguments=local_args))
    escalated = route == "escalated"
    routing = Routing(
        decision="local" if route == "local" else "remote", reason="test",
        local_attempt=local if escalated else None,
        remote_usage=Usage(prompt_tokens=100, completion_tokens=10) if escalated else None,
        remote_bytes=500 if escalated else 0, queued=route == "local_fallback",
        remote_error="down" if route == "local_fallback" else None,
    )  # fmt: skip
    return AgentResult.model_validate({
        "request": "turn on the light", "model": "m", "tool_calls": [outcome], "route": route,
        "routing": routing, "latency_ms": 200.0,
    })  # fmt: skip


def test_report_reads_routed_turns_from_the_sealed_log(capsys: pytest.CaptureFixture[str]) -> None:
    from edge_agent.logstore import open_log

    kitchen = {"area": "Kitchen"}
    with open_log(load_settings()) as log:
        for result in [
            turn("local", kitchen, kitchen),
            turn("local", kitchen, kitchen),
            turn("escalated", {"area": "kitchen"}, kitchen),  # agrees (case-folded)
            turn("escalated", {"area": "Hall"}, kitchen),
            turn("local_fallback", kitchen, kitchen),
            AgentResult(request="not routed", model="m"),
        ]:
            log.record(result)
    code, out, _ = run_cli(capsys, "route", "report", "--json")
    data = json.loads(out)["log"]
    assert code == 0 and data["turns"] == 5
    assert data["routes"] == {"local": 2, "escalated": 2, "local_fallback": 1}
    assert data["local_share"] == 0.6 and data["local_agrees_with_teacher"] == 0.5
    assert data["remote"]["prompt_tokens"] == 200 and data["remote"]["bytes_sent"] == 1000
    assert data["queued_for_teacher"] == 1 and data["latency_ms"]["local"]["p50"] == 200.0
    code, out, _ = run_cli(capsys, "route", "report")
    assert code == 0 and "5 routed turns" in out


class FakeRuntime:
    """A stand-in for the runtime at `open_runtime`: the skill runs adapter "home" on "tiny"."""

    model_name = "tiny"

    def __init__(self) -> None:
        self.backend = ScriptedBackend([], name="scripted")

    def adapter_of(self, skill: str) -> str | None:
        return "home" if skill == "home" else None

    def skill_backend(self, skill: str) -> ScriptedBackend:
        return self.backend

    def __enter__(self) -> FakeRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_calibrate_reads_only_the_validation_split(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent import runtime
    from edge_agent.routing import calibration
    from edge_agent.skills.home import dataset

    asked: list[str] = []
    real_load_split = dataset.load_split

    def load_split(name: Any, rows: Any = None) -> Any:
        asked.append(name)
        return real_load_split(name, rows)

    def collect(backend: Any, rows: Any, **kwargs: Any) -> list[SignalRecord]:
        pairs = zip(records(), rows, strict=False)
        return [r.model_copy(update={"id": row.id}) for r, row in pairs]

    monkeypatch.setattr(dataset, "load_split", load_split)
    monkeypatch.setattr(calibration, "collect", collect)
    monkeypatch.setattr(runtime, "open_runtime", lambda settings: FakeRuntime())
    code, out, _ = run_cli(capsys, "route", "calibrate", "--target", "0.95", "--json")
    assert code == 0 and asked == ["validation"]
    saved = Calibrations.load(load_settings().route_path).of("home")
    assert saved and saved.adapter == "home" and saved.model == "tiny"
    ids = {r.id for r in saved.records}
    assert ids <= set(split_ids("validation")) and not ids & set(split_ids("test"))
    assert json.loads(out)["stats"]["accuracy"] >= 0.95


@pytest.mark.integration
def test_calibrate_and_run_on_the_default_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "route", "calibrate", "--limit", "3", "--threads", "1",
                             "--json")  # fmt: skip
    assert code == 0, err
    saved = Calibrations.load(load_settings().route_path).of("home")
    assert saved and saved.adapter == "home" and len(saved.records) == 3
    assert all(r.signals.chosen_tokens > 0 for r in saved.records)

    gold = ("HassTurnOn", {"area": "Kitchen", "domain": "light"})
    with stand_in_teacher(gold) as teacher, env(REMOTE_URL=teacher.url, REMOTE_MODEL=teacher.model):
        code, out, err = run_cli(capsys, "run", "turn on the kitchen light", "--route", "remote",
                                 "--threads", "1", "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["route"] == "escalated" and result["tool_calls"][0]["status"] == "ok"
    assert result["routing"]["local_attempt"]["model"]
    assert "kitchen light" in teacher.requests[0]["messages"][1]["content"]
    code, out, _ = run_cli(capsys, "route", "report", "--json")
    assert json.loads(out)["log"]["routes"]["escalated"] == 1


@contextmanager
def env(**values: str) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in values.items():
            mp.setenv(f"EDGE_AGENT_{key}", value)
        yield


# --- route key: the remote's API key in the OS keyring ----------------------------------------

URL = "http://teacher:8000/v1"


@pytest.fixture
def os_keyring() -> Iterator[Any]:
    """An in-memory OS keyring (conftest gives every test none at all)."""
    import keyring

    previous, backend = keyring.get_keyring(), memory_keyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_key_set_reads_piped_stdin_and_stores_it_per_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, os_keyring: Any
) -> None:
    stdin(monkeypatch, "s3cret-key\n")
    code, out, err = run_cli(capsys, "route", "key", "set", URL)
    assert code == 0 and os_keyring.items == {(KEYRING_SERVICE, URL): "s3cret-key"}
    assert URL in out and "s3cret" not in out + err


def test_key_set_on_a_terminal_prompts_hidden(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, os_keyring: Any
) -> None:
    tty = io.StringIO("typed-in-clear\n")
    monkeypatch.setattr(tty, "isatty", lambda: True)
    monkeypatch.setattr("sys.stdin", tty)
    monkeypatch.setattr("click.termui.hidden_prompt_func", lambda prompt: "hidden-key")
    with env(REMOTE_URL=URL):
        code, _, _ = run_cli(capsys, "route", "key", "set")
    assert code == 0 and os_keyring.items == {(KEYRING_SERVICE, URL): "hidden-key"}


def test_key_set_refuses_without_a_url_or_a_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, os_keyring: Any
) -> None:
    stdin(monkeypatch, "k\n")
    code, _, err = run_cli(capsys, "route", "key", "set")
    assert code == 2 and "remote_url" in err and len(err.strip().splitlines()) == 1
    stdin(monkeypatch, "\n")
    code, _, err = run_cli(capsys, "route", "key", "set", URL)
    assert code == 2 and "no key" in err and not os_keyring.items


def test_key_commands_without_a_keyring_are_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for command in ("set", "delete", "status"):
        stdin(monkeypatch, "s3cret-key\n")
        code, out, err = run_cli(capsys, "route", "key", command, URL)
        assert code == 2 and "OS keyring" in err and len(err.strip().splitlines()) == 1
        assert "s3cret" not in out + err


def test_key_status_and_delete(capsys: pytest.CaptureFixture[str], os_keyring: Any) -> None:
    os_keyring.set_password(KEYRING_SERVICE, URL, "s3cret-key")
    code, out, _ = run_cli(capsys, "route", "key", "status", URL, "--json")
    assert code == 0 and json.loads(out) == {
        "url": URL, "source": "keyring", "env": None, "stored": True
    }  # fmt: skip
    code, out, _ = run_cli(capsys, "route", "key", "delete", URL)
    assert code == 0 and "deleted" in out and not os_keyring.items
    code, out, _ = run_cli(capsys, "route", "key", "delete", URL)
    assert code == 0 and "no key" in out
    code, out, _ = run_cli(capsys, "route", "key", "status", URL)
    assert code == 0 and "no key" in out and "s3cret" not in out


def test_key_status_names_the_variable_that_takes_precedence(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, os_keyring: Any
) -> None:
    os_keyring.set_password(KEYRING_SERVICE, URL, "s3cret-key")
    with env(REMOTE_URL=URL, REMOTE_API_KEY_ENV="MY_TEACHER_KEY"):
        code, out, _ = run_cli(capsys, "route", "key", "status", "--json")
        # The keyring's entry is never read while a variable is named.
        assert code == 0 and json.loads(out) == {
            "url": URL, "source": "env", "env": "MY_TEACHER_KEY", "stored": False
        }  # fmt: skip
        monkeypatch.setenv("MY_TEACHER_KEY", "env-s3cret")
        code, out, _ = run_cli(capsys, "route", "key", "status")
    assert code == 0 and "MY_TEACHER_KEY" in out and "s3cret" not in out


def test_key_set_warns_when_a_variable_is_read_instead(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, os_keyring: Any
) -> None:
    stdin(monkeypatch, "s3cret-key\n")
    with env(REMOTE_API_KEY_ENV="MY_TEACHER_KEY"):
        code, _, err = run_cli(capsys, "route", "key", "set", URL)
    assert code == 0 and "$MY_TEACHER_KEY" in err and os_keyring.items
