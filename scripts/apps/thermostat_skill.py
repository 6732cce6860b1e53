"""The thermostat app as a Python skill, the way a package ships one through the
``edge_agent.skills`` entry point group (`flywheel_skill.py --app entry-point` installs it as a
real distribution on the device's path). Rooms live in ``THERMOSTAT_STATE`` (JSON)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edge_agent.errors import ToolExecutionError
from edge_agent.skills.skill import Skill
from edge_agent.tools import Toolset, tool
from edge_agent.types import Effect

STATE = Path(os.environ.get("THERMOSTAT_STATE", "thermostat.json"))


def _rooms() -> dict[str, float]:
    return json.loads(STATE.read_text()) if STATE.exists() else {}


@tool(effect=Effect.ACTUATING)
def set_temperature(room: str, celsius: float) -> str:
    """Sets a room's target temperature.

    Args:
        room: The room.
        celsius: Degrees Celsius.
    """
    STATE.write_text(json.dumps(_rooms() | {room: celsius}))
    return f"{room} set to {celsius:g} degrees"


@tool(effect=Effect.READ_ONLY)
def read_sensor(name: str) -> str:
    """Reads a room's temperature sensor.

    Args:
        name: The room.
    """
    rooms = _rooms()
    if name not in rooms:
        raise ToolExecutionError(f"no sensor named {name!r}")
    return f"{name} is at {rooms[name]:g} degrees"


def _toolset(settings: Any) -> Toolset:
    return Toolset("thermostat", [set_temperature, read_sensor], description="heating")


skill = Skill("thermostat", toolset=_toolset, route="teacher-first", description="heating")
