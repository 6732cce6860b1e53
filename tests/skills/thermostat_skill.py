"""A third-party skill as a package would ship it: two tools, and the ways to expose them."""

from __future__ import annotations

from typing import Any

from edge_agent.skills.skill import Skill
from edge_agent.tools import Toolset, tool
from edge_agent.types import Effect

ROOMS: dict[str, float] = {"kitchen": 20.0}


@tool(effect=Effect.ACTUATING)
def set_temperature(room: str, celsius: float) -> dict[str, Any]:
    """Sets a room's target temperature.

    Args:
        room: The room.
        celsius: Degrees Celsius.
    """
    ROOMS[room] = celsius
    return {"speech": f"{room} set to {celsius:g} °C"}


@tool(effect=Effect.READ_ONLY)
def read_sensor(name: str) -> float:
    """Reads a temperature sensor.

    Args:
        name: The sensor's room.
    """
    return ROOMS.get(name, 0.0)


def toolset(settings: object = None) -> Toolset:
    return Toolset("thermostat", [set_temperature, read_sensor], description="heating")


skill = Skill("thermostat", toolset=toolset, route="teacher-first", description="heating")
a_toolset = toolset()
not_a_skill = 42
