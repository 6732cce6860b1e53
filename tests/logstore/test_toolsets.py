"""The log keeps what training needs: each tool set's schemas once (per fingerprint and
period), sealed like the records; the skill, the SLM's attempt and the teacher's call on
every turn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import LogKeyError
from edge_agent.logstore import BatchWriter, FileKeySource, LogConfig, LogStore, verify
from edge_agent.logstore.keys import new_key
from edge_agent.tools import fingerprint
from edge_agent.types import AgentResult, LocalAttempt, Routing, ToolCall
from tests.logstore_support import Clock, make_config, make_messages, make_result, raw

THERMOSTAT: list[dict[str, Any]] = [
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
LIGHTS: list[dict[str, Any]] = [
    {"name": "lights_on", "description": "", "parameters": {"type": "object", "properties": {}}}
]


def turn(i: int, schemas: list[dict[str, Any]], skill: str = "thermostat") -> AgentResult:
    result = make_result(i)
    result.skill, result.toolset = skill, fingerprint(schemas)
    return result


def count(config: LogConfig) -> int:
    return int(raw(config).execute("SELECT count(*) FROM toolsets").fetchone()[0])


@pytest.fixture
def config(tmp_path: Path) -> LogConfig:
    return make_config(tmp_path)


@pytest.fixture
def store(config: LogConfig) -> Iterator[LogStore]:
    with LogStore(config, clock=Clock()) as s:
        yield s


def test_a_hundred_turns_of_one_toolset_store_its_schemas_once(
    store: LogStore, config: LogConfig
) -> None:
    for i in range(100):
        store.record(turn(i, THERMOSTAT), tools=THERMOSTAT)
    assert count(config) == 1
    store.record(turn(100, LIGHTS, "lights"), tools=LIGHTS)
    assert count(config) == 2
    assert store.toolset_schemas(fingerprint(THERMOSTAT)) == THERMOSTAT
    assert store.toolset_schemas(fingerprint(LIGHTS)) == LIGHTS
    assert store.toolset_schemas("0" * 32) is None


def test_record_many_and_the_batch_writer_carry_tools(store: LogStore, config: LogConfig) -> None:
    store.record_many((turn(i, THERMOSTAT), None, THERMOSTAT) for i in range(10))
    store.record_many([(make_result(10), None)])  # the old two-part items still work
    with BatchWriter(store) as writer:
        for i in range(20, 30):
            writer.record(turn(i, LIGHTS, "lights"), tools=LIGHTS)
    assert count(config) == 2
    assert store.toolset_schemas(fingerprint(LIGHTS)) == LIGHTS


def test_schemas_read_back_after_reopening_and_are_sealed_on_disk(config: LogConfig) -> None:
    with LogStore(config, clock=Clock()) as store:
        store.record(turn(1, THERMOSTAT), tools=THERMOSTAT)
    with LogStore(config, clock=Clock()) as store:
        assert store.toolset_schemas(fingerprint(THERMOSTAT)) == THERMOSTAT
        store.record(turn(2, THERMOSTAT), tools=THERMOSTAT)  # known on disk: not stored again
        assert count(config) == 1
    files = [config.path, config.path.with_name(config.path.name + "-wal")]
    data = b"".join(p.read_bytes() for p in files if p.exists())
    assert b"set_temperature" not in data and b"celsius" not in data


def test_a_wrong_key_cannot_read_them(config: LogConfig) -> None:
    clock = Clock()
    with LogStore(config, clock=clock) as store:
        store.record(turn(1, THERMOSTAT), tools=THERMOSTAT)
        clock.advance(30)
        store.record(turn(2, LIGHTS, "lights"), tools=LIGHTS)  # another period, another key
        db = raw(config)
        keys = [r[0] for r in db.execute("SELECT key_id FROM toolsets ORDER BY ts")]
        db.execute("UPDATE toolsets SET key_id = ? WHERE key_id = ?", (keys[1], keys[0]))
        assert store.toolset_schemas(fingerprint(THERMOSTAT)) is None
    key_file = config.key_dir / "log-master.key"
    key_file.unlink()
    FileKeySource(config.key_dir).save(new_key())  # another master key: refused at open
    with pytest.raises(LogKeyError, match="is not the one that sealed"):
        LogStore(config)


def test_schemas_moved_to_another_fingerprint_fail(store: LogStore, config: LogConfig) -> None:
    store.record(turn(1, THERMOSTAT), tools=THERMOSTAT)
    store.record(turn(2, LIGHTS, "lights"), tools=LIGHTS)
    db = raw(config)
    body = db.execute(
        "SELECT body FROM toolsets WHERE fingerprint = ?", (fingerprint(THERMOSTAT),)
    ).fetchone()[0]
    db.execute("UPDATE toolsets SET body = ? WHERE fingerprint = ?", (body, fingerprint(LIGHTS)))
    assert store.toolset_schemas(fingerprint(LIGHTS)) is None  # never THERMOSTAT's
    report = verify(store)
    assert [b.id for b in report.bad] == [f"toolset:{fingerprint(LIGHTS)}"]
    assert report.toolsets == 2


def test_schemas_go_with_their_period_and_come_back_with_the_next(tmp_path: Path) -> None:
    clock = Clock()
    config = make_config(tmp_path, retention_days=10, period_days=1)
    with LogStore(config, clock=clock) as store:
        store.record(turn(1, THERMOSTAT), tools=THERMOSTAT)
        clock.advance(20)  # past retention: the period's key is shredded, rows purged
        store.apply_retention()
        assert count(config) == 0
        assert store.toolset_schemas(fingerprint(THERMOSTAT)) is None
        store.record(turn(2, THERMOSTAT), tools=THERMOSTAT)  # a new period seals them anew
        assert store.toolset_schemas(fingerprint(THERMOSTAT)) == THERMOSTAT


def test_the_slm_attempt_and_the_teacher_call_survive(store: LogStore) -> None:
    result = turn(1, THERMOSTAT)
    result.route = "escalated"
    result.tool_calls[0].call = ToolCall(
        name="set_temperature", arguments={"room": "office", "celsius": 21}
    )
    attempt = LocalAttempt(
        model="smollm2", call=ToolCall(name="read_sensor", arguments={"name": "office"})
    )
    result.routing = Routing(decision="remote", reason="low confidence", local_attempt=attempt)
    store.record(result, make_messages(result), tools=THERMOSTAT)
    item = store.get(result.id)
    assert item.result == result
    assert item.local_attempt == attempt
    assert item.teacher_label == result.tool_calls[0].call
    assert (item.result.skill, item.result.toolset) == ("thermostat", fingerprint(THERMOSTAT))


def test_a_log_from_before_toolsets_is_migrated_on_open(config: LogConfig) -> None:
    with LogStore(config, clock=Clock()) as store:
        old = store.record(make_result(1))
    db = raw(config)  # as an older version left it: no toolsets table, one migration
    db.execute("DROP TABLE toolsets")
    db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm002_toolsets'")
    db.close()
    with LogStore(config, clock=Clock()) as store:
        store.record(turn(2, THERMOSTAT), tools=THERMOSTAT)
        assert store.toolset_schemas(fingerprint(THERMOSTAT)) == THERMOSTAT
        assert store.get(old).result.toolset is None
        assert verify(store).clean
