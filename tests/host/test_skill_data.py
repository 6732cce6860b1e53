"""Per-skill curation from the store: turns grouped by skill, tools rebuilt from the logged
schemas alone, calls checked against them, split by request with teacher-only eval, and
one skill's records never reaching another's plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest

from edge_agent.anonymize import Anonymizer
from edge_agent.host.flywheel import plan_skill, plan_skills
from edge_agent.host.ingest_store import Incoming, IngestStore, Quota
from edge_agent.host.skill_data import curate_skill, skill_data, turns_by_skill
from edge_agent.logstore import LogStore
from edge_agent.prompt import call_json
from edge_agent.settings import Settings, SkillConfig
from edge_agent.sync import SyncClient, enroll
from edge_agent.tools import ARGUMENT_ORDER, Toolset, fingerprint, tool
from edge_agent.types import Effect, ToolCall
from tests.host.flywheel_support import (
    dimmer,
    home_turns,
    ingest,
    thermostat,
    thermostat_turn,
    thermostat_turns,
)
from tests.logstore_support import make_config
from tests.sync_support import SECRET, HostServer, token


@pytest.fixture
def store(tmp_path: Path) -> IngestStore:
    return IngestStore(tmp_path / "ingest.db")


def test_turns_are_grouped_by_skill_and_old_devices_are_home(store: IngestStore) -> None:
    ingest(store, thermostat_turns(8) + home_turns(5), [thermostat()])
    grouped = turns_by_skill(store)
    assert {k: len(v) for k, v in grouped.items()} == {"thermostat": 8, "home": 5}
    assert all(t.fingerprint == thermostat().fingerprint for t in grouped["thermostat"])


def test_the_toolset_is_rebuilt_from_the_logged_schemas_alone(store: IngestStore) -> None:
    ingest(store, thermostat_turns(8), [thermostat()])
    data = skill_data("thermostat", turns_by_skill(store)["thermostat"], store)
    assert data.toolset is not None and data.toolset.names == ["set_temperature", "read_sensor"]
    # sync and the store sort object keys; the grammar's order (room first) is restored
    assert data.toolset.schemas() == thermostat().schemas()
    call = ToolCall(name="set_temperature", arguments={"celsius": 20, "room": "hall"})
    assert call_json(call, data.toolset) == call_json(call, thermostat())
    assert call_json(call, data.toolset).startswith(
        '{"name": "set_temperature", "arguments": {"room"'
    )
    assert data.fingerprints == [thermostat().fingerprint] and len(data.records) == 8
    assert {r.skill for r in data.records} == {"thermostat"}
    with pytest.raises(Exception, match="cannot run here|not here|host"):  # no handler on the host
        data.toolset.get("read_sensor").run({"name": "hall"})


def test_a_call_that_does_not_validate_against_its_own_schemas_is_dropped(
    store: IngestStore,
) -> None:
    good = thermostat_turns(4)
    bad_args = thermostat_turn(90, "set the attic to warm", ToolCall(
        name="set_temperature", arguments={"room": "attic", "celsius": "warm"}))  # fmt: skip
    unknown = thermostat_turn(91, "turn on the kitchen light", ToolCall(
        name="HassTurnOn", arguments={"name": "kitchen light"}))  # fmt: skip
    ingest(store, [*good, bad_args, unknown], [thermostat()])
    data = skill_data("thermostat", turns_by_skill(store)["thermostat"], store)
    assert len(data.records) == 4 and data.dropped == {"invalid_call": 2}


def test_turns_without_stored_schemas_of_an_unknown_skill_are_dropped(store: IngestStore) -> None:
    ingest(store, thermostat_turns(3))  # the batch carried no schemas
    plan = plan_skill(store, "thermostat")
    assert plan.curated is None and plan.data.dropped == {"no_schemas": 3}
    assert plan.skipped is not None and "no tool schemas" in plan.skipped


@tool(effect=Effect.ACTUATING)
def set_temperature_v2(room: str, fahrenheit: float) -> str:
    """Sets a room's target temperature.

    Args:
        room: The room.
        fahrenheit: Target in degrees Fahrenheit.
    """
    return room


def test_several_tool_sets_train_on_the_newest_and_drop_what_it_no_longer_accepts(
    store: IngestStore,
) -> None:
    """The tools changed (celsius -> fahrenheit): old reads still validate and count, old
    sets no longer do; the newest tool set is what the skill trains on."""
    old = thermostat()
    new = Toolset("thermostat", [tool(effect=Effect.ACTUATING, name="set_temperature")(
        set_temperature_v2.handler), old.get("read_sensor")])  # fmt: skip
    old_turns = thermostat_turns(8)  # days 0 and 1
    new_call = ToolCall(name="set_temperature", arguments={"room": "hall", "fahrenheit": 68})
    new_turn = thermostat_turn(50, "set the hall to 68 F", new_call, toolset=new, day=5)
    ingest(store, [*old_turns, new_turn], [old, new])
    data = skill_data("thermostat", turns_by_skill(store)["thermostat"], store)
    assert data.fingerprint == new.fingerprint and data.toolset is not None
    assert data.toolset.get("set_temperature").parameters_schema()["required"] == [
        "room", "fahrenheit"]  # fmt: skip
    assert data.fingerprints == [old.fingerprint, new.fingerprint]
    kept = sorted(r.call.name for r in data.records if r.call)
    assert kept == ["read_sensor", "read_sensor", "set_temperature"]  # 2 old reads + the new set
    assert data.dropped == {"stale_toolset": 6}


def test_split_is_by_request_and_eval_holds_teacher_labels_only(store: IngestStore) -> None:
    """Duplicates of a request that differ in case and punctuation land in one part; the
    device's own calls never enter the eval part."""
    turns = []
    for i in range(60):
        request = f"set the office to {i} degrees"
        call = ToolCall(name="set_temperature", arguments={"room": "office", "celsius": i})
        for j, variant in enumerate((request, request.upper() + "!", f"  {request.title()}.")):
            route: Literal["local", "escalated"] = "local" if j == 2 else "escalated"
            turns.append(thermostat_turn(1000 + 3 * i + j, variant, call, route=route))
    ingest(store, turns, [thermostat()])
    curated = curate_skill(skill_data("thermostat", turns_by_skill(store)["thermostat"], store))
    parts = {name: {r.key for r in getattr(curated, name)}
             for name in ("train", "validation", "eval")}  # fmt: skip
    assert all(parts.values())
    assert not (parts["train"] & parts["validation"] or parts["train"] & parts["eval"]
                or parts["validation"] & parts["eval"])  # fmt: skip
    assert all(r.route == "escalated" for r in curated.eval)
    every = curated.train + curated.validation + curated.eval
    assert len(every) == 60  # one per request: the duplicates collapsed, teacher's preferred
    dropped = curated.dropped  # the local ones: a client ran them, no label (labeled_turn)
    assert dropped["duplicate"] + dropped.get("call_error", 0) == 120, dropped


def test_a_record_of_one_skill_never_enters_another_skills_plan(tmp_path: Path) -> None:
    """Foreign records, even ones asking the same words with home's tool names, leave the
    home skill's rows, split and eval part exactly as they were."""
    alone, mixed = IngestStore(tmp_path / "a.db"), IngestStore(tmp_path / "b.db")
    home = home_turns(40)
    ingest(alone, home)
    read = ToolCall(name="read_sensor", arguments={"name": "kitchen"})
    foreign = [thermostat_turn(500 + i, t.result.request, read) for i, t in enumerate(home)]
    ingest(mixed, home + foreign + thermostat_turns(20), [thermostat()])
    (before,) = plan_skills(alone, ["home"], min_train=1)
    after = {p.name: p for p in plan_skills(mixed, min_train=1)}
    assert set(after) == {"home", "thermostat"}
    assert before.curated is not None and after["home"].curated is not None
    for part in ("train", "validation", "eval"):
        assert getattr(after["home"].curated, part) == getattr(before.curated, part)
    assert after["home"].curated.dropped == before.curated.dropped
    assert {r.skill for r in after["thermostat"].data.records} == {"thermostat"}


def test_a_skill_the_host_knows_lends_its_own_tools_and_their_declared_order(
    store: IngestStore,
) -> None:
    """The store sorted the optional arguments (fade_s before level); the host's own build of
    the same tools (same fingerprint) writes them as the device's grammar does."""
    call = ToolCall(name="set_dimmer", arguments={"name": "hall", "level": 40, "fade_s": 2.0})
    ingest(store, [thermostat_turn(1, "dim the hall to 40", call, toolset=dimmer())], [dimmer()])
    turns = turns_by_skill(store)["dimmer"]
    config = SkillConfig(python="tests.host.flywheel_support:dimmer")
    known = skill_data("dimmer", turns, store, Settings(skills={"dimmer": config}))
    assert known.toolset is not None and known.fingerprint == dimmer().fingerprint
    assert call_json(call, known.toolset) == call_json(call, dimmer())
    assert '"level": 40, "fade_s": 2.0' in call_json(call, known.toolset)
    assert len(known.records) == 1


# --- the declared argument order, through sync and the store ----------------------------------

DIM = ToolCall(name="set_dimmer", arguments={"name": "hall", "level": 40, "fade_s": 2.0})


def test_a_skill_the_host_does_not_know_writes_calls_in_the_devices_order(
    store: IngestStore,
) -> None:
    """The schemas name the declared order; the store's sorted keys lose nothing."""
    ingest(store, [thermostat_turn(1, "dim the hall to 40", DIM, toolset=dimmer())], [dimmer()])
    data = skill_data("dimmer", turns_by_skill(store)["dimmer"], store, Settings())
    assert data.toolset is not None and data.fingerprint == dimmer().fingerprint
    assert call_json(DIM, data.toolset) == call_json(DIM, dimmer())
    assert '"level": 40, "fade_s": 2.0' in call_json(DIM, data.toolset)


def _as_older_device(toolset: Toolset) -> tuple[list[dict[str, object]], str]:
    """The schemas a device older than the argument order logged, and their fingerprint."""
    schemas = [{k: v for k, v in s.items() if k != ARGUMENT_ORDER} for s in toolset.schemas()]
    return schemas, fingerprint(schemas)


def _ingest_older(store: IngestStore, toolset: Toolset, turn_call: ToolCall) -> None:
    schemas, fp = _as_older_device(toolset)
    turn = thermostat_turn(1, "dim the hall to 40", turn_call, toolset=toolset)
    turn.result.toolset = fp
    body = json.dumps(schemas, sort_keys=True, separators=(",", ":"))
    records = [(turn.id, turn.recorded_at, turn.model_dump_json(exclude={"synced"}))]
    store.ingest(Incoming("dev_0000000000000001", "k1", "k1", 1, records, {fp: body}), Quota())


def test_an_older_devices_schemas_of_a_skill_the_host_knows_get_its_own_order(
    store: IngestStore,
) -> None:
    _ingest_older(store, dimmer(), DIM)
    config = SkillConfig(python="tests.host.flywheel_support:dimmer")
    known = skill_data("dimmer", turns_by_skill(store)["dimmer"], store,
                       Settings(skills={"dimmer": config}))  # fmt: skip
    assert known.toolset is not None and len(known.records) == 1
    assert call_json(DIM, known.toolset) == call_json(DIM, dimmer())


def test_an_older_devices_schemas_of_an_unknown_skill_still_build(store: IngestStore) -> None:
    """No order logged, no skill to ask: required first, then the optional ones sorted."""
    _ingest_older(store, dimmer(), DIM)
    data = skill_data("dimmer", turns_by_skill(store)["dimmer"], store, Settings())
    assert data.toolset is not None and len(data.records) == 1
    assert '"name": "hall", "fade_s": 2.0, "level": 40' in call_json(DIM, data.toolset)


@pytest.mark.integration
def test_the_order_goes_from_the_devices_log_through_sync_to_the_host(
    host: HostServer, tmp_path: Path
) -> None:
    device = dimmer()
    turn = thermostat_turn(1, "dim the hall to 40", DIM, toolset=device)
    with LogStore(make_config(tmp_path / "device")) as log:
        log.record(turn.result, turn.messages, tools=device.schemas())
        enrollment = enroll(host.url, token(host), pin=host.cert.sha256)
        with SyncClient(log, Anonymizer(SECRET), enrollment) as client:
            assert client.sync().acknowledged == 1
    data = skill_data("dimmer", turns_by_skill(host.store)["dimmer"], host.store, Settings())
    assert data.toolset is not None and data.fingerprint == device.fingerprint
    [record] = data.records
    assert record.call is not None
    assert call_json(record.call, data.toolset) == call_json(record.call, device)
    assert data.toolset.describe_compact() == device.describe_compact()
