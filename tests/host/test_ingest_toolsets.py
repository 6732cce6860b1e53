"""The host keeps each tool set's schemas once, by fingerprint, beside the records that name
them; it counts records per skill, and forgets schemas no record references any more."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent.host.ingest_store import Incoming, IngestStore, Quota, ToolsetConflict
from edge_agent.tools import fingerprint
from tests.sync_support import make_interaction

THERMOSTAT = [
    {
        "name": "set_temperature",
        "description": "Set a room's target temperature.",
        "parameters": {
            "type": "object",
            "properties": {"room": {"type": "string"}, "celsius": {"type": "number"}},
            "required": ["room", "celsius"],
        },
        "effect": "actuating",
    },
    {
        "name": "read_sensor",
        "description": "Read a sensor.",
        "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
    },
]
LIGHTS = [{"name": "lights_on", "description": "", "parameters": {"type": "object"}}]


def canonical(schemas: list[dict[str, Any]]) -> str:
    return json.dumps(schemas, sort_keys=True, separators=(",", ":"))


def body(i: int, skill: str | None, toolset: str | None) -> tuple[str, float, str]:
    item = make_interaction(i)
    item.result.skill, item.result.toolset = skill, toolset
    return item.id, item.recorded_at, item.model_dump_json(exclude={"synced"})


def incoming(
    key: str, records: list[tuple[str, float, str]], toolsets: dict[str, str], device: str = "d1"
) -> Incoming:
    return Incoming(
        device_id=device,
        key=key,
        body_sha256=key,
        wire_bytes=100,
        records=records,
        toolsets=toolsets,
    )


@pytest.fixture
def store(tmp_path: Path) -> IngestStore:
    return IngestStore(tmp_path / "ingest.db")


def test_schemas_are_stored_once_and_read_back(store: IngestStore) -> None:
    fp, lights = fingerprint(THERMOSTAT), fingerprint(LIGHTS)
    store.ingest(incoming("k1", [body(1, "thermostat", fp)], {fp: canonical(THERMOSTAT)}), Quota())
    store.ingest(
        incoming(
            "k2",
            [body(2, "thermostat", fp), body(3, "lights", lights)],
            {fp: canonical(THERMOSTAT), lights: canonical(LIGHTS)},
        ),
        Quota(),
    )
    assert store.toolset_schemas(fp) == THERMOSTAT
    assert store.toolsets() == {fp: THERMOSTAT, lights: LIGHTS}
    assert store.toolset_schemas("0" * 32) is None
    rows = store.conn.execute("SELECT count(*) FROM toolsets").fetchone()[0]
    assert rows == 2


def test_skills_count_records_and_old_records_are_home(store: IngestStore) -> None:
    fp = fingerprint(THERMOSTAT)
    records = [body(1, "thermostat", fp), body(2, "thermostat", fp), body(3, None, None)]
    store.ingest(incoming("k1", records, {fp: canonical(THERMOSTAT)}), Quota())
    assert store.skills() == {"thermostat": 2, "home": 1}
    assert len(store.records()) == 3


def test_a_different_body_for_a_known_fingerprint_is_refused(store: IngestStore) -> None:
    fp = fingerprint(THERMOSTAT)
    store.ingest(incoming("k1", [body(1, "t", fp)], {fp: canonical(THERMOSTAT)}), Quota())
    with pytest.raises(ToolsetConflict, match=fp):
        store.ingest(incoming("k2", [body(2, "t", fp)], {fp: canonical(LIGHTS)}), Quota())
    assert len(store.records()) == 1  # nothing of the refused batch was stored
    assert store.toolset_schemas(fp) == THERMOSTAT


def test_schemas_live_as_long_as_a_record_names_them(store: IngestStore) -> None:
    fp, lights = fingerprint(THERMOSTAT), fingerprint(LIGHTS)
    store.ingest(incoming("k1", [body(1, "t", fp)], {fp: canonical(THERMOSTAT)}), Quota())
    store.ingest(
        incoming("k2", [body(2, "l", lights)], {lights: canonical(LIGHTS)}, device="d2"), Quota()
    )
    store.ingest(
        incoming("k3", [body(3, "t", fp)], {fp: canonical(THERMOSTAT)}, device="d2"), Quota()
    )
    store.forget("d1")
    assert set(store.toolsets()) == {fp, lights}  # d2 still has a thermostat record
    store.forget("d2")
    assert store.toolsets() == {}
