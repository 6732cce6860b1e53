"""Batches carry the schemas of the tool sets their records name: verbatim (tool names,
argument names, skill names intact) while every value is anonymized; an older device's batch
is unchanged byte for byte."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from edge_agent.sync import wire
from edge_agent.tools import fingerprint
from tests.sync.test_client import FakeHost, client
from tests.sync_support import LIGHTS, THERMOSTAT, MemorySource, make_interaction, thermostat_turn

FP, LIGHTS_FP = fingerprint(THERMOSTAT), fingerprint(LIGHTS)


class BodyHost(FakeHost):
    """FakeHost that keeps every decoded batch it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(gzip.decompress(request.content)))
        return super().__call__(request)


def sent(host: BodyHost) -> str:
    return json.dumps(host.bodies)


# --- the wire -----------------------------------------------------------------------------------


def test_a_batch_without_tool_sets_is_the_old_format_byte_for_byte() -> None:
    part = wire.encode_record(make_interaction(1))
    old = b'{"protocol":1,"records":[%b]}' % part
    assert wire.batch_body([part]) == old
    assert wire.batch_body([part], wire.encode_toolsets({})) == old
    assert wire.WireBatch.model_validate_json(old, strict=True).toolsets == {}


def test_tool_sets_round_trip_and_are_canonical() -> None:
    item = thermostat_turn(1)
    body = wire.batch_body([wire.encode_record(item)], wire.encode_toolsets({FP: THERMOSTAT}))
    assert b'],"toolsets":{"%b":[{"description"' % FP.encode() in body  # sorted keys
    batch = wire.WireBatch.model_validate_json(body, strict=True)
    assert batch.toolsets == {FP: THERMOSTAT}
    assert batch.records[0].result.toolset == FP


@pytest.mark.parametrize(
    ("toolsets", "error"),
    [
        ({}, "without their schemas"),  # the record names FP
        ({FP: THERMOSTAT, LIGHTS_FP: LIGHTS}, "named by no record"),
        ({FP.upper(): THERMOSTAT}, "should match pattern"),
        ({FP: [1, 2]}, "should be an object"),
    ],
)
def test_the_schema_refuses_tool_sets_that_do_not_match_the_records(
    toolsets: dict[str, Any], error: str
) -> None:
    part = wire.encode_record(thermostat_turn(1))
    body = b'{"protocol":1,"records":[%b],"toolsets":%b}' % (part, json.dumps(toolsets).encode())
    with pytest.raises(ValidationError, match=error):
        wire.WireBatch.model_validate_json(body, strict=True)


# --- the client ---------------------------------------------------------------------------------


def test_each_batch_carries_the_schemas_its_records_name() -> None:
    lights = [thermostat_turn(100 + i, LIGHTS) for i in range(3)]
    items = [thermostat_turn(i) for i in range(5)] + lights + [make_interaction(9)]
    src = MemorySource(items, {FP: THERMOSTAT, LIGHTS_FP: LIGHTS})
    host = BodyHost()
    report = client(src, host, batch_records=4).sync()
    assert report.acknowledged == 9 and src.synced == set(src.items)
    for body in host.bodies:
        named = {r["result"]["toolset"] for r in body["records"]} - {None}
        assert set(body.get("toolsets", {})) == named  # each batch: exactly its own
        for fp in named:
            assert body["toolsets"][fp] == (THERMOSTAT if fp == FP else LIGHTS)
        wire.WireBatch.model_validate(body)


def test_values_are_anonymized_but_tool_argument_and_skill_names_are_not() -> None:
    src, host = MemorySource([thermostat_turn(1)], {FP: THERMOSTAT}), BodyHost()
    client(src, host).sync()
    text, record = sent(host), host.bodies[0]["records"][0]
    for personal in ("alice@example.com", "Alice", "Smith", "/home/alice"):
        assert personal not in text
    result = record["result"]
    assert (result["skill"], result["toolset"]) == ("thermostat", FP)
    call = result["tool_calls"][0]["call"]
    assert call["name"] == "set_temperature" and set(call["arguments"]) == {"room", "celsius"}
    assert call["arguments"]["celsius"] == 21
    attempt = result["routing"]["local_attempt"]["call"]
    assert attempt["name"] == "read_sensor" and set(attempt["arguments"]) == {"name"}
    assert host.bodies[0]["toolsets"] == {FP: THERMOSTAT}  # verbatim


def test_a_record_whose_schemas_are_gone_goes_without_its_fingerprint() -> None:
    src, host = MemorySource([thermostat_turn(1), thermostat_turn(2)]), BodyHost()
    report = client(src, host).sync()
    assert report.acknowledged == 2
    body = host.bodies[0]
    assert "toolsets" not in body
    assert [r["result"]["toolset"] for r in body["records"]] == [None, None]
    assert [r["result"]["skill"] for r in body["records"]] == ["thermostat"] * 2


def test_the_key_of_a_rebuilt_batch_is_the_same() -> None:
    keys = []
    for _ in range(2):
        src, host = MemorySource([thermostat_turn(1)], {FP: THERMOSTAT}), BodyHost()
        client(src, host).sync()
        keys.append(host.keys[0])
    assert keys[0] == keys[1]


def test_a_record_too_large_with_its_schemas_is_held_back() -> None:
    big = [{**THERMOSTAT[0], "description": "x" * 4000}]
    item = thermostat_turn(1, big)
    src, host = MemorySource([item], {fingerprint(big): big}), BodyHost()
    report = client(src, host, batch_bytes=3000).sync()
    assert "with its tool schemas" in report.held[item.id] and not host.bodies
