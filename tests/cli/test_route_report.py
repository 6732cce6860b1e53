"""`edge-agent route report` per skill and day (--skill, --days, --out) and `edge-agent route
label`, on a crafted sealed log and a stand-in teacher on 127.0.0.1."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import pytest

from edge_agent.logstore import Pending, open_log
from edge_agent.settings import load_settings
from edge_agent.types import Interaction, Message
from tests.cli_support import run_cli
from tests.routing.routing_support import DEMO, TEACHER_MODEL
from tests.routing.test_report import RIGHT, WRONG, record
from tests.teacher_support import stand_in_teacher

DAY = 86_400.0
SKILLS = {"lenient": {"python": "tests.routing.routing_support:LENIENT"},
          "demo": {"python": "tests.routing.routing_support:DEMO"}}  # fmt: skip


@pytest.fixture(autouse=True)
def device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_LOG_KEY_SOURCE", "file")
    monkeypatch.setenv("EDGE_AGENT_SKILLS", json.dumps(SKILLS))


def write(items: list[Interaction]) -> None:
    with open_log(load_settings()) as log:
        log.write([Pending(i.result, i.messages, i.recorded_at) for i in items])


def crafted_log() -> None:
    now = time.time()
    write([
        record(now - 2 * DAY, "escalated", "teacher", ran=RIGHT, shadow=WRONG, sent=1000),
        record(now - 2 * DAY, "escalated", "teacher", ran=RIGHT, shadow=WRONG, sent=1000,
               skill="lenient"),
        record(now, "local", "sure", ran=RIGHT),
        record(now, "escalated", "unsure", ran=RIGHT, shadow=RIGHT, sent=800),
    ])  # fmt: skip


def report(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = run_cli(capsys, "route", "report", "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_report_per_skill_and_day_with_each_skills_scorer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    crafted_log()
    skills = report(capsys)["skills"]
    assert sorted(skills) == ["demo", "lenient"]
    demo = skills["demo"]
    assert [d["turns"] for d in demo["days"]] == [1, 2]
    assert demo["total"] | {"reasons": None} == demo["total"] | {
        "turns": 3, "local": 1, "local_share": 0.3333, "shadowed": 2, "shadow_agreement": 0.5,
        "teacher_bytes": 1800, "reasons": None,
    }  # fmt: skip
    assert demo["total"]["reasons"] == {"teacher-first": 1, "min log-prob": 1}
    # the lenient skill's own scorer accepts its wrong-looking shadow call
    assert skills["lenient"]["total"]["shadow_agreement"] == 1.0
    only = report(capsys, "--skill", "demo", "--days", "1")
    assert list(only["skills"]) == ["demo"] and only["skills"]["demo"]["total"]["turns"] == 2
    assert only["log"]["turns"] == 2
    code, out, _ = run_cli(capsys, "route", "report", "--skill", "demo")
    assert code == 0 and "skill demo: 3 turns, 33% local" in out and "shadow agreement 50%" in out


def test_report_writes_a_png(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    crafted_log()
    png = tmp_path / "report.png"
    data = report(capsys, "--out", str(png))
    assert data["png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_png_without_matplotlib_or_turns_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    code, _, err = run_cli(capsys, "route", "report", "--out", str(tmp_path / "r.png"))
    assert code == 2 and "nothing to draw" in err and err.count("\n") == 1
    crafted_log()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as on a device without it
    code, _, err = run_cli(capsys, "route", "report", "--out", str(tmp_path / "r.png"))
    assert code == 2 and "--json" in err and err.count("\n") == 1
    assert not (tmp_path / "r.png").exists()
    code, _, err = run_cli(capsys, "route", "report", "--since", "1d", "--days", "1")
    assert code == 2 and "not both" in err


def queued_turn(text: str, skill: str = "demo") -> Interaction:
    turn = record(time.time(), "local_fallback", "teacher", ran=RIGHT, queued=True, skill=skill)
    result = turn.result.model_copy(update={"request": text, "toolset": DEMO.fingerprint})
    messages = [Message(role="system", content="tools"), Message(role="user", content=text)]
    return Interaction(result=result, messages=messages, recorded_at=turn.recorded_at)


def test_route_label_labels_queued_turns_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write([queued_turn(f"set the kitchen light to {70 + i}") for i in range(3)])
    with stand_in_teacher(("set_light", RIGHT)) as teacher:
        monkeypatch.setenv("EDGE_AGENT_REMOTE_URL", teacher.url)
        monkeypatch.setenv("EDGE_AGENT_REMOTE_MODEL", TEACHER_MODEL)
        code, out, err = run_cli(capsys, "route", "label", "--limit", "2", "--json")
        assert code == 0, err
        assert json.loads(out) | {"teacher_bytes": 0} == {
            "waiting": 3, "labelled": 2, "failed": 0, "skipped": 0, "remaining": 1,
            "teacher_bytes": 0, "stopped": None,
        }  # fmt: skip
        code, out, _ = run_cli(capsys, "route", "label")
        assert code == 0 and "labelled 1 of 1 queued turns" in out
        code, out, _ = run_cli(capsys, "route", "label", "--json")
        assert json.loads(out)["waiting"] == 0 and len(teacher.requests) == 3
    skills = report(capsys)["skills"]["demo"]["total"]
    assert (skills["labelled"], skills["local_accuracy"], skills["labels"]) == (3, 1.0, 3)


def test_route_label_without_a_log_or_a_remote_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run_cli(capsys, "route", "label")
    assert code == 2 and "no interaction log" in err and err.count("\n") == 1
    write([queued_turn("set the kitchen light to 70")])
    code, out, err = run_cli(capsys, "route", "label", "--json")
    assert code == 0 and json.loads(out)["waiting"] == 1 and json.loads(out)["labelled"] == 0
    assert "no remote model" in json.loads(out)["stopped"]  # none configured: only counted
