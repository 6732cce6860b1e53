"""`host skills`, `host train --skill NAME | --all` and `host report` on a store holding two
skills (home from devices older than skills, a custom two-tool thermostat), with the tiny
model through torch and llama.cpp: each skill trains on its own rows, gates on its own
held-out teacher labels, and is published under its own name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_agent.adapters.release import AdapterRelease
from edge_agent.cli import cli
from edge_agent.host.flywheel import incumbent_for, plan_skill
from edge_agent.host.pipeline import evaluate_records, export_adapter
from edge_agent.host.publish import AdapterRepository
from edge_agent.models.gguf import BaseModelIdentity
from tests.host.flywheel_support import (
    home_turns,
    host_store,
    ingest,
    thermostat,
    thermostat_turn,
    thermostat_turns,
)
from tests.tinymodel import TinyLora, make_tiny_llama

pytestmark = pytest.mark.integration
TRAIN = ["--max-steps", "1", "--rank", "2", "--batch-size", "2", "--no-cluster"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # the bare base's prompt lists every home tool: ~5.4k tiny-tokenizer tokens
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), context=8192).gguf_path


@pytest.fixture
def store(edge_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_CONTEXT_SIZE", "8192")
    with_schemas = host_store(edge_home)
    try:
        ingest(with_schemas, thermostat_turns(40) + home_turns(30), [thermostat()])
    finally:
        with_schemas.close()


def invoke(*args: str) -> Any:
    out = CliRunner().invoke(cli, list(args))
    assert out.exit_code == 0, out.output + repr(out.exception)
    return out.stdout  # stderr carries the libraries' progress bars


def test_host_skills_lists_both_skills(store: None) -> None:
    rows = {s["skill"]: s for s in json.loads(invoke("host", "skills", "--json"))}
    assert set(rows) == {"home", "thermostat"}
    thermo, home = rows["thermostat"], rows["home"]
    assert (thermo["records"], thermo["teacher_labels"], thermo["shadow_attempts"]) == (40, 40, 40)
    assert thermo["shadow_agreement"] == 0.5 and thermo["toolsets"] == [thermostat().fingerprint]
    assert (home["records"], home["teacher_labels"], home["shadow_agreement"]) == (30, 30, None)
    assert home["toolsets"] == [] and thermo["adapter"] is None
    text = invoke("host", "skills")
    assert "thermostat" in text and "50% (of 40)" in text and "none" in text


def test_train_one_skill_gates_on_its_own_rows_and_publishes_it(
    store: None, model: Path, edge_home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    summary = json.loads(invoke("host", "train", "--skill", "thermostat", "--from-store",
                                "--model", str(model), "--out", str(out), "--margin", "-1",
                                "--publish", "--json", *TRAIN))  # fmt: skip
    adapter = out / "thermostat" / "thermostat.gguf"
    assert summary["adapter"] == str(adapter) and adapter.exists()
    assert summary["skill"] == "thermostat" and summary["published"] == "thermostat-v1"
    gate = json.loads((out / "thermostat" / "gate.json").read_text())
    plan = plan_skill(host_store(edge_home), "thermostat")
    assert plan.curated is not None and plan.curated.eval
    assert all(r.id.startswith("thermo_") and r.route == "escalated" for r in plan.curated.eval)
    assert gate["candidate"]["n"] == gate["incumbent"]["n"] == len(plan.curated.eval)
    assert set(gate["per_intent"]) <= {"set_temperature", "read_sensor"}
    (release,) = AdapterRepository(edge_home / "data" / "host" / "tuf").releases()
    assert (release.name, release.skill, release.version) == ("thermostat-v1", "thermostat", 1)
    validation = {r.request for r in plan.curated.validation}
    assert release.canary and {c.text for c in release.canary} <= validation
    listed = {s["skill"]: s for s in json.loads(invoke("host", "skills", "--json"))}
    assert listed["thermostat"]["adapter"] == "thermostat-v1" and listed["home"]["adapter"] is None
    _the_report_shows_the_release(tmp_path, out)


def _the_report_shows_the_release(tmp_path: Path, runs: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "report.png"
    data = json.loads(invoke("host", "report", "--json", "--out", str(png), "--runs", str(runs)))
    thermo = {s["skill"]: s for s in data["skills"]}["thermostat"]
    assert [d["records"] for d in thermo["days"]] == [20, 20]  # two days of turns
    assert sum(d["agree"] for d in thermo["days"]) == 20
    (release,) = thermo["releases"]
    assert release["name"] == "thermostat-v1" and release["before"] is not None
    assert thermo["turns"][0]["skill"] == "thermostat"
    assert png.read_bytes().startswith(b"\x89PNG")
    text = invoke("host", "report")
    assert "thermostat-v1  gate exact" in text and "2026-01-02" in text


def test_all_trains_each_skill_and_skips_one_short_of_data(
    store: None, model: Path, edge_home: Path, tmp_path: Path
) -> None:
    few = host_store(edge_home)
    try:  # a third skill with the thermostat's tools and only three turns
        turns = thermostat_turns(3)
        for turn in turns:
            turn.result.skill, turn.result.id = "radiator", turn.result.id + "r"
        ingest(few, turns, [thermostat()], key="k2")
    finally:
        few.close()
    out = tmp_path / "runs"
    args = ["--model", str(model), "--out", str(out), "--margin", "-1", "--min-train", "5"]
    data = json.loads(invoke("host", "train", "--all", *args, "--json", *TRAIN))["skills"]
    assert set(data) == {"home", "radiator", "thermostat"}
    assert "training rows" in data["radiator"]["skipped"]
    for name in ("home", "thermostat"):
        assert data[name]["adapter"] == str(out / name / f"{name}.gguf")
        assert (out / name / "gate.json").exists()
    assert not (out / "radiator").exists()


def test_a_skill_not_in_the_store_is_one_readable_error(store: None) -> None:
    out = CliRunner().invoke(cli, ["host", "train", "--skill", "nope"])
    assert out.exit_code != 0 and "no records of skill 'nope'" in str(out.exception)
    both = CliRunner().invoke(cli, ["host", "train", "--skill", "home", "--all"])
    assert both.exit_code == 2 and "not both" in both.output


def test_a_foreign_record_never_changes_the_home_gate(
    edge_home: Path, model: Path, tiny_lora: TinyLora, tmp_path: Path
) -> None:
    """Thermostat turns asking home's very words, synced beside home's: home's held-out rows
    and its gate's numbers through llama.cpp stay exactly what they were without them."""
    adapter = export_adapter(tiny_lora.directory, tiny_lora.base.gguf_path, tmp_path / "a.gguf")
    store = host_store(edge_home)
    try:
        ingest(store, home_turns(30))
        alone = plan_skill(store, "home")
        read = thermostat_turns(1)[0].result.tool_calls[0].call
        foreign = [thermostat_turn(700 + i, t.result.request, read)
                   for i, t in enumerate(home_turns(30))]  # fmt: skip
        ingest(store, foreign, [thermostat()], key="k2")
        mixed = plan_skill(store, "home")
    finally:
        store.close()
    assert alone.curated is not None and mixed.curated is not None and alone.curated.eval
    assert mixed.curated.eval == alone.curated.eval and mixed.curated.train == alone.curated.train
    assert alone.task is not None and mixed.task is not None
    gates = [evaluate_records(alone.task, model, adapter, alone.curated.eval, 8192),
             evaluate_records(mixed.task, model, adapter, mixed.curated.eval, 8192)]  # fmt: skip
    assert gates[0].report == gates[1].report
    assert {r.tool for r in gates[1].report.rows} == {"HassTurnOn"}


def test_the_incumbent_is_the_skills_own_latest_release(
    tmp_path: Path, tiny_lora: TinyLora, identity: BaseModelIdentity
) -> None:
    base = tiny_lora.base.gguf_path
    adapter = export_adapter(tiny_lora.directory, base, tmp_path / "a.gguf")
    repo = AdapterRepository.init(tmp_path / "tuf")
    for skill, version in (("thermostat", 1), ("thermostat", 2), ("home", 3)):
        repo.publish(adapter, AdapterRelease(name=f"{skill}-v{version}", skill=skill,
                     version=version, base_identity=identity.as_dict()))  # fmt: skip
    path, name = incumbent_for(repo, "thermostat", base)
    assert name == "thermostat-v2" and path is not None
    assert path.read_bytes() == adapter.read_bytes() and path.is_relative_to(repo.targets_dir)
    assert incumbent_for(repo, "radiator", base) == (None, None)  # nothing published: bare base
    assert incumbent_for(None, "thermostat", base) == (None, None)  # no repository yet
