"""The host keeps each tool set's schemas once, by fingerprint, beside the records that name
them; it counts records per skill, forgets schemas no record references any more, and takes a
device's log through sync to a toolset it can rebuild from the schemas alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.anonymize import Anonymizer
from edge_agent.host.ingest_store import Incoming, IngestStore, Quota, ToolsetConflict
from edge_agent.logstore import LogStore
from edge_agent.sync import Enrollment, SyncClient, SyncOptions, enroll, pinned_context, wire
from edge_agent.tools import Toolset, fingerprint
from edge_agent.types import Interaction
from tests.logstore_support import make_config
from tests.sync_support import (
    LIGHTS,
    SECRET,
    THERMOSTAT,
    HostServer,
    MemorySource,
    make_interaction,
    thermostat_turn,
    token,
)

FP = fingerprint(THERMOSTAT)


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
def store(store_url: str) -> Iterator[IngestStore]:
    """An ingest store on each engine (tests/host/conftest.py)."""
    store = IngestStore(store_url)
    yield store
    store.close()


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
    with store.engine.transaction() as c:
        assert c.execute("SELECT count(*) FROM toolsets").fetchone()[0] == 2


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


# --- through sync, over HTTPS on 127.0.0.1 -------------------------------------------------------


def device(host: HostServer) -> Enrollment:
    return enroll(host.url, token(host), pin=host.cert.sha256)


def post(
    host: HostServer, e: Enrollment, records: list[Any], toolsets: Any = None
) -> httpx.Response:
    batch: dict[str, Any] = {"protocol": 1, "records": records}
    if toolsets is not None:
        batch["toolsets"] = toolsets
    body = json.dumps(batch).encode()
    headers = {"Authorization": f"Bearer {e.credential}", wire.KEY_HEADER: wire.batch_key(body)}
    with httpx.Client(base_url=host.url, verify=pinned_context(host.cert.pem)) as c:
        return c.post("/v1/batches", content=body, headers=headers)


def as_json(item: Interaction) -> dict[str, Any]:
    return item.model_dump(mode="json", exclude={"synced"})


@pytest.mark.integration
def test_the_log_reaches_the_host_which_rebuilds_the_toolset(
    host: HostServer, tmp_path: Path
) -> None:
    with LogStore(make_config(tmp_path / "device")) as log:
        for i in range(30):
            item = thermostat_turn(i)
            log.record(item.result, item.messages, tools=THERMOSTAT)
        log.record(make_interaction(99).result)  # an older turn: no skill, no tool set
        with SyncClient(log, Anonymizer(SECRET), device(host), SyncOptions(batch_records=8)) as c:
            report = c.sync()
    assert report.acknowledged == 31 and report.batches == 4
    store = host.store
    assert store.toolsets() == {FP: THERMOSTAT}
    assert store.skills() == {"thermostat": 30, "home": 1}
    bodies = [Interaction.model_validate_json(r["body"]) for r in store.records()]
    logged = [b for b in bodies if b.result.skill == "thermostat"]
    schemas = store.toolset_schemas(logged[0].result.toolset or "")
    assert schemas is not None
    tools = Toolset.from_schemas("thermostat", schemas)  # from the schemas alone
    for item in logged:
        label, attempt = item.teacher_label, item.local_attempt
        assert label is not None and attempt is not None and attempt.call is not None
        assert tools.get(label.name).validate(label.arguments)["celsius"] == 21
        tools.get(attempt.call.name).validate(attempt.call.arguments)
    text = " ".join(r["body"] for r in store.records())
    assert "alice@example.com" not in text and "Alice" not in text


@pytest.mark.integration
def test_tampered_schemas_are_refused_and_nothing_is_stored(host: HostServer) -> None:
    e, record = device(host), as_json(thermostat_turn(1))
    tampered = [dict(THERMOSTAT[0], description="Unlock every door."), THERMOSTAT[1]]
    answer = post(host, e, [as_json(make_interaction(2)), record], {FP: tampered})
    assert answer.status_code == 422, answer.text
    assert "do not hash" in answer.json()["detail"] and answer.json()["records"] == [1]
    assert host.store.records() == [] and host.store.toolsets() == {}


@pytest.mark.integration
def test_schemas_that_build_no_toolset_are_refused(host: HostServer) -> None:
    bad = [{"name": "x", "description": "", "parameters": {"type": "string"}}]
    item = thermostat_turn(1, bad)
    answer = post(host, device(host), [as_json(item)], {fingerprint(bad): bad})
    assert answer.status_code == 422 and "build no toolset" in answer.json()["detail"]
    assert host.store.records() == []


@pytest.mark.integration
def test_a_record_must_bring_its_schemas(host: HostServer) -> None:
    e = device(host)
    answer = post(host, e, [as_json(thermostat_turn(1))])
    assert answer.status_code == 422 and "without their schemas" in answer.json()["detail"]
    answer = post(
        host, e, [as_json(thermostat_turn(1))], {FP: THERMOSTAT, fingerprint(LIGHTS): LIGHTS}
    )
    assert answer.status_code == 422 and "named by no record" in answer.json()["detail"]
    assert host.store.records() == []


@pytest.mark.integration
def test_an_older_device_batch_without_tool_sets_is_accepted(host: HostServer) -> None:
    answer = post(host, device(host), [as_json(make_interaction(i)) for i in range(3)])
    assert answer.status_code == 200 and answer.json()["stored"] == 3
    assert host.store.skills() == {"home": 3} and host.store.toolsets() == {}


@pytest.mark.integration
def test_the_device_holds_back_records_whose_schemas_the_host_refuses(host: HostServer) -> None:
    wrong = [dict(s, description="edited after the fact") for s in THERMOSTAT]
    source = MemorySource(
        [thermostat_turn(1), make_interaction(2), thermostat_turn(3)], {FP: wrong}
    )
    with SyncClient(source, Anonymizer(SECRET), device(host)) as client:
        report = client.sync()
    assert set(report.held) == {"turn_t0000001", "turn_t0000003"}
    assert report.acknowledged == 1 and host.store.toolsets() == {}
