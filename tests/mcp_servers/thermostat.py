"""A thermostat MCP server (the official SDK's MCPServer): stdio by default, ``--http`` for
streamable HTTP on 127.0.0.1 at a port the OS picks, printed as ``PORT <n>`` once listening
(requests must then carry ``Authorization: Bearer $THERMOSTAT_TOKEN`` when that is set).

Its tools cover each annotation case the toolset maps onto an effect, a tool that always
errors, one that outlives a short timeout, one whose schema no grammar can hold, one that
kills the server, and one that acts and counts its runs in ``$THERMOSTAT_BELL_LOG`` (a file, so
the count outlives the process). For the reconnect tests: ``$THERMOSTAT_PORT`` fixes the HTTP
port, ``$THERMOSTAT_LEGACY`` refuses the 2026 protocol (so a session id that a restarted server
does not know), and a ``$THERMOSTAT_VERSION_FILE`` that says ``2`` lists other tools (no
``unlock_door``, a new ``open_window``).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import ToolAnnotations
from mcp_types import METHOD_NOT_FOUND, RequestParams
from pydantic import BaseModel

server = MCPServer("thermostat", instructions="Heating of a small flat.", log_level="WARNING")
ROOMS: dict[str, float] = {"kitchen": 19.0, "bedroom": 17.5}
if "THERMOSTAT_OUTSIDE_C" in os.environ:  # set through the toolset's `env`
    ROOMS["outside"] = float(os.environ["THERMOSTAT_OUTSIDE_C"])


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False))
def set_temperature(room: str, celsius: float) -> str:
    """Sets a room's target temperature.

    Args:
        room: The room.
        celsius: Degrees Celsius.
    """
    ROOMS[room] = celsius
    return f"{room} set to {celsius:g} °C"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def read_sensor(name: str) -> dict[str, float | str]:
    """Reads a room's temperature sensor."""
    if name not in ROOMS:
        raise ToolError(f"no sensor named {name!r}")
    return {"room": name, "celsius": ROOMS[name]}


@server.tool()
def unlock_door(door: str) -> str:
    """Unlocks a door (no annotations: the spec's defaults say destructive)."""
    return f"{door} unlocked"


@server.tool(
    annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True), structured_output=False
)
def list_rooms() -> str:
    """Lists the rooms, as JSON text and nothing structured."""
    return '{"rooms": ["' + '", "'.join(sorted(ROOMS)) + '"]}'


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def boiler_status() -> str:
    """Always fails: the boiler does not answer."""
    raise ToolError("boiler offline since 06:00")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def slow_report(seconds: float = 60.0) -> str:
    """Takes its time."""
    time.sleep(seconds)
    return "late"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def server_pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool(annotations=ToolAnnotations(destructiveHint=True))
def crash() -> str:
    """Ends the server process at once."""
    os._exit(3)


@server.tool(annotations=ToolAnnotations(destructiveHint=False))
def ring_bell(then_exit: bool = False) -> str:
    """Rings the door bell once (each run is counted), and ends the server after it if asked."""
    with open(os.environ["THERMOSTAT_BELL_LOG"], "a") as log:
        log.write("ring\n")
    if then_exit:
        os._exit(3)
    return "rung"


def _version() -> str:
    path = os.environ.get("THERMOSTAT_VERSION_FILE")
    return open(path).read().strip() if path and os.path.exists(path) else "1"


if _version() == "2":
    server.remove_tool("unlock_door")

    @server.tool(annotations=ToolAnnotations(destructiveHint=False))
    def open_window(room: str) -> str:
        """Opens a room's window."""
        return f"{room} window open"


if os.environ.get("THERMOSTAT_LEGACY"):

    async def _no_discover(ctx: Any, params: Any) -> Any:
        raise MCPError(code=METHOD_NOT_FOUND, message="Method not found")

    server._lowlevel_server.add_request_handler("server/discover", RequestParams, _no_discover)


class Schedule(BaseModel):
    hour: int
    celsius: float


@server.tool(annotations=ToolAnnotations(destructiveHint=False))
def set_schedule(entries: list[Schedule]) -> str:
    """Nested objects: a schema the device's grammar cannot hold."""
    return f"{len(entries)} entries"


def _bearer(app: Any, token: str) -> Any:
    """The app behind a bearer token check: 401 without it."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)

    return guarded


def serve_http() -> None:
    import anyio
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart reuses the port
    sock.bind(("127.0.0.1", int(os.environ.get("THERMOSTAT_PORT", "0"))))
    sock.listen()
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    app = server.streamable_http_app()
    token = os.environ.get("THERMOSTAT_TOKEN")
    config = uvicorn.Config(
        _bearer(app, token) if token else app, log_level="warning", timeout_graceful_shutdown=1
    )
    anyio.run(uvicorn.Server(config).serve, [sock])


if __name__ == "__main__":
    if "--http" in sys.argv:
        serve_http()
    else:
        server.run()
