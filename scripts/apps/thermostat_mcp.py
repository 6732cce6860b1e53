"""The thermostat app as an MCP server (official SDK), over stdio: what `[skills.NAME]
mcp_command` starts. Rooms live in a JSON file (``THERMOSTAT_STATE``) so a change outlives the
server process, as a real thermostat's would."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("thermostat", instructions="Heating of a flat.", log_level="WARNING")
STATE = Path(os.environ.get("THERMOSTAT_STATE", "thermostat.json"))


def _rooms() -> dict[str, float]:
    return json.loads(STATE.read_text()) if STATE.exists() else {}


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False))
def set_temperature(room: str, celsius: float) -> str:
    """Sets a room's target temperature.

    Args:
        room: The room.
        celsius: Degrees Celsius.
    """
    rooms = _rooms() | {room: celsius}
    STATE.write_text(json.dumps(rooms))
    return f"{room} set to {celsius:g} degrees"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def read_sensor(name: str) -> str:
    """Reads a room's temperature sensor.

    Args:
        name: The room.
    """
    rooms = _rooms()
    if name not in rooms:
        raise ToolError(f"no sensor named {name!r}")
    return f"{name} is at {rooms[name]:g} degrees"


if __name__ == "__main__":
    server.run("stdio")
