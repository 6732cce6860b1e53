"""A host store holding two skills, as devices sync them: the home skill's turns from devices
older than skills (no skill, no schemas) and a custom ``thermostat`` skill (two tools, its
schemas logged by fingerprint), served teacher-first with the SLM's attempt in shadow."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from edge_agent.host.ingest_store import Incoming, IngestStore, Quota
from edge_agent.tools import Toolset, tool
from edge_agent.types import (
    AgentResult,
    Effect,
    Interaction,
    LocalAttempt,
    Message,
    Routing,
    ToolCall,
    ToolOutcome,
)

DAY_S = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
ROOMS = ("kitchen", "bedroom", "office", "hall", "bathroom", "garage", "attic", "porch")


@tool(effect=Effect.ACTUATING)
def set_temperature(room: str, celsius: float) -> str:
    """Sets a room's target temperature.

    Args:
        room: The room.
        celsius: Target in degrees Celsius.
    """
    raise AssertionError("the host never runs a skill's tools")


@tool(effect=Effect.READ_ONLY)
def read_sensor(name: str) -> float:
    """Reads a sensor.

    Args:
        name: The sensor.
    """
    raise AssertionError("the host never runs a skill's tools")


def thermostat() -> Toolset:
    return Toolset("thermostat", [set_temperature, read_sensor])


@tool(effect=Effect.ACTUATING)
def set_dimmer(name: str, level: int = 100, fade_s: float = 0.0) -> str:
    """Dims a light.

    Args:
        name: The light.
        level: Percent.
        fade_s: Seconds to fade over.
    """
    raise AssertionError("the host never runs a skill's tools")


def dimmer(_settings: object = None) -> Toolset:
    """Optional arguments declared out of alphabetical order (a skill factory for config)."""
    return Toolset("dimmer", [set_dimmer])


def thermostat_turn(
    i: int,
    request: str,
    call: ToolCall,
    *,
    toolset: Toolset | None = None,
    shadow: ToolCall | None = None,
    day: int = 0,
    route: Literal["local", "escalated"] = "escalated",
) -> Interaction:
    """A teacher-first turn: the teacher's call is the label, the SLM's attempt sits beside."""
    tools = toolset or thermostat()
    known = call.name in tools
    effect = tools.get(call.name).effect_of(call.arguments) if known else Effect.READ_ONLY
    attempt = LocalAttempt(model="slm", call=shadow) if shadow else None
    routing = Routing(decision="remote", reason="teacher-first", local_attempt=attempt)
    result = AgentResult(
        id=f"thermo_{i:04d}", request=request, model="slm", skill=tools.name,
        toolset=tools.fingerprint, route=route,
        tool_calls=[ToolOutcome(call=call, effect=effect, status="delegated")],
        routing=routing if route == "escalated" else None,
    )  # fmt: skip
    messages = [Message(role="system", content="s"), Message(role="user", content=request)]
    return Interaction(result=result, messages=messages, recorded_at=T0 + day * DAY_S + i)


def thermostat_turns(n: int = 40) -> list[Interaction]:
    """`n` distinct requests over two days; the shadow attempt agrees on every other one."""
    turns = []
    for i in range(n):
        room = ROOMS[i % len(ROOMS)]
        if i % 4 == 3:
            room = ROOMS[i // 4 % len(ROOMS)]
            request, call = (
                f"what does the {room} sensor read",
                ToolCall(name="read_sensor", arguments={"name": room}),
            )
        else:
            degrees = 16 + i % 9
            request = f"set the {room} to {degrees} degrees ({i})"
            call = ToolCall(name="set_temperature", arguments={"room": room, "celsius": degrees})
        shadow = call if i % 2 == 0 else ToolCall(name="read_sensor", arguments={"name": "x"})
        turns.append(thermostat_turn(i, request, call, shadow=shadow, day=i % 2))
    return turns


def home_turn(i: int, request: str, name: str) -> Interaction:
    """A turn of a device older than skills: no skill, no fingerprint, the home tools."""
    call = ToolCall(name="HassTurnOn", arguments={"name": name})
    result = AgentResult(
        id=f"home_{i:04d}", request=request, model="slm", route="escalated",
        tool_calls=[ToolOutcome(call=call, effect=Effect.ACTUATING, status="ok")],
    )  # fmt: skip
    messages = [Message(role="user", content=request)]
    return Interaction(result=result, messages=messages, recorded_at=T0 + i)


def home_turns(n: int = 24) -> list[Interaction]:
    lights = ("kitchen light", "hall light", "porch light", "desk lamp", "bed light")
    return [home_turn(i, f"turn on the {lights[i % 5]} please {i}", lights[i % 5])
            for i in range(n)]  # fmt: skip


def ingest(
    store: IngestStore,
    turns: Sequence[Interaction],
    toolsets: Sequence[Toolset] = (),
    *,
    key: str = "k1",
    device: str = "dev_0000000000000001",
) -> None:
    """Store `turns` as one synced batch carrying `toolsets`' schemas."""
    records = [(t.id, t.recorded_at, t.model_dump_json(exclude={"synced"})) for t in turns]
    schemas = {
        ts.fingerprint: json.dumps(ts.schemas(), sort_keys=True, separators=(",", ":"))
        for ts in toolsets
    }
    store.ingest(Incoming(device, key, key, 1, records, schemas), Quota())


def host_store(edge_home: Path) -> IngestStore:
    """The store `edge-agent host` commands open in this test's EDGE_AGENT_HOME."""
    return IngestStore(edge_home / "data" / "host" / "ingest.db")
