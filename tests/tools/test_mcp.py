"""MCP servers as toolsets: real servers (tests/mcp_servers) over stdio and streamable HTTP."""

from __future__ import annotations

import gc
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
from mcp_types import ToolAnnotations

from edge_agent.errors import ConfigError, ToolDefinitionError, ToolExecutionError, ToolTimeoutError
from edge_agent.tools import execute
from edge_agent.tools.mcp import McpToolset, effect_of, mcp_toolset
from edge_agent.types import Effect
from tests.mcp_servers import CATALOG, THERMOSTAT, command, http_server


@pytest.fixture(scope="module")
def thermostat_url() -> Iterator[str]:
    with http_server(THERMOSTAT) as url:
        yield url


@pytest.fixture(params=["stdio", "http"])
def thermostat(request: pytest.FixtureRequest) -> Iterator[McpToolset]:
    """The thermostat's tools over each transport (2 s per call)."""
    if request.param == "stdio":
        where = {"command": command(THERMOSTAT)}
    else:
        where = {"url": request.getfixturevalue("thermostat_url")}
    with mcp_toolset("thermo", timeout_s=2.0, **where) as tools:
        yield tools


# --- what the toolset looks like --------------------------------------------------------------


def test_tools_are_listed_with_their_schemas(thermostat: McpToolset) -> None:
    assert thermostat.names == [
        "set_temperature", "read_sensor", "unlock_door", "list_rooms", "boiler_status",
        "slow_report", "server_pid", "crash", "ring_bell",
    ]  # fmt: skip
    [schema] = [s for s in thermostat.schemas() if s["name"] == "set_temperature"]
    assert schema["description"] == "Sets a room's target temperature."  # the docstring's summary
    assert schema["parameters"] == {
        "type": "object",
        "properties": {  # described by the docstring's Args
            "room": {"type": "string", "description": "The room."},
            "celsius": {"type": "number", "description": "Degrees Celsius."},
        },
        "required": ["room", "celsius"],
        "additionalProperties": False,
    }
    assert thermostat.description == "Heating of a small flat."


def test_annotations_become_effects(thermostat: McpToolset) -> None:
    effects = {s["name"]: s["effect"] for s in thermostat.schemas()}
    assert effects["read_sensor"] == "read_only"
    assert effects["set_temperature"] == "actuating"  # destructiveHint false
    assert effects["unlock_door"] == "dangerous"  # no annotations: the spec's defaults
    assert effects["crash"] == "dangerous"  # destructiveHint true
    assert thermostat.get("list_rooms").idempotent  # type: ignore[attr-defined]
    assert not thermostat.get("read_sensor").idempotent  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("hints", "effect"),
    [
        (None, Effect.DANGEROUS),
        (ToolAnnotations(), Effect.DANGEROUS),
        (ToolAnnotations(read_only_hint=True), Effect.READ_ONLY),
        (ToolAnnotations(read_only_hint=True, destructive_hint=True), Effect.READ_ONLY),
        (ToolAnnotations(read_only_hint=False), Effect.DANGEROUS),
        (ToolAnnotations(destructive_hint=False), Effect.ACTUATING),
        (ToolAnnotations(destructive_hint=True, idempotent_hint=True), Effect.DANGEROUS),
    ],
)
def test_effect_follows_the_spec_defaults(hints: ToolAnnotations | None, effect: Effect) -> None:
    assert effect_of(hints) is effect


def test_a_tool_the_device_cannot_constrain_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, "edge_agent.tools.mcp"),
        mcp_toolset("thermo", command=command(THERMOSTAT)) as tools,
    ):
        assert "set_schedule" not in tools
    [warning] = caplog.records
    assert "skipping tool 'set_schedule'" in warning.getMessage()
    assert "$ref" in warning.getMessage()


def test_every_page_is_listed_and_nullable_optionals_are_plain() -> None:
    with mcp_toolset("catalog", command=command(CATALOG)) as tools:
        assert tools.names == ["echo", "snapshot"]  # one page each; two more pages skipped
        assert tools.get("echo").parameters_schema()["properties"]["times"] == {"type": "integer"}
        assert execute(tools.get("echo"), {"text": "hi", "times": 2}) == "hi hi"
        assert execute(tools.get("snapshot"), {}) == "front door, 12:00\n[image image/png]"


def test_a_server_with_no_usable_tool_is_a_definition_error() -> None:
    with pytest.raises(ToolDefinitionError) as err:
        mcp_toolset("catalog", command=command(CATALOG, "--unusable-only"))
    message = str(err.value)
    assert "MCP server 'catalog'" in message and "no usable tool" in message
    assert "'bad name!'" in message and "configure.options" in message


# --- calls ------------------------------------------------------------------------------------


def test_a_call_runs_on_the_server_and_changes_its_state(thermostat: McpToolset) -> None:
    done = execute(thermostat.get("set_temperature"), {"room": "kitchen", "celsius": 22.5})
    assert done == "kitchen set to 22.5 °C"  # the SDK's {"result": ...} wrapper unwrapped
    reading = execute(thermostat.get("read_sensor"), {"name": "kitchen"})
    assert reading == {"room": "kitchen", "celsius": 22.5}  # structuredContent as sent


def test_text_results_are_read_as_json(thermostat: McpToolset) -> None:
    assert execute(thermostat.get("list_rooms"), {}) == {"rooms": ["bedroom", "kitchen"]}


def test_an_error_result_raises_with_the_servers_text(thermostat: McpToolset) -> None:
    with pytest.raises(ToolExecutionError, match="boiler offline since 06:00"):
        execute(thermostat.get("boiler_status"), {})
    with pytest.raises(ToolExecutionError, match="no sensor named 'attic'"):
        execute(thermostat.get("read_sensor"), {"name": "attic"})


def test_a_call_past_the_timeout_raises_and_the_session_lives_on(thermostat: McpToolset) -> None:
    started = time.monotonic()
    with pytest.raises(ToolTimeoutError, match=r"did not run slow_report within 2 s"):
        execute(thermostat.get("slow_report"), {"seconds": 3}, timeout_s=10)
    assert time.monotonic() - started < 5
    assert execute(thermostat.get("read_sensor"), {"name": "bedroom"})["celsius"] == 17.5


def test_calls_from_many_threads_at_once(thermostat: McpToolset) -> None:
    results: dict[int, object] = {}

    def call(i: int) -> None:
        room = f"room{i}"
        execute(thermostat.get("set_temperature"), {"room": room, "celsius": i})
        results[i] = execute(thermostat.get("read_sensor"), {"name": room})["celsius"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {i: float(i) for i in range(8)}


# --- connecting and closing -------------------------------------------------------------------


def test_env_reaches_a_stdio_server() -> None:
    env = {"THERMOSTAT_OUTSIDE_C": "-3.5"}
    with mcp_toolset("thermo", command=command(THERMOSTAT), env=env) as tools:
        assert execute(tools.get("read_sensor"), {"name": "outside"})["celsius"] == -3.5


def test_headers_reach_an_http_server() -> None:
    with http_server(THERMOSTAT, env={"THERMOSTAT_TOKEN": "s3cret"}) as url:
        auth = {"Authorization": "Bearer s3cret"}
        with mcp_toolset("thermo", url=url, headers=auth) as tools:
            assert "read_sensor" in tools
        with pytest.raises(ConfigError, match="cannot connect to MCP server 'thermo'"):
            mcp_toolset("thermo", url=url, headers={"Authorization": "Bearer wrong"})


def test_close_stops_the_stdio_server() -> None:
    tools = mcp_toolset("closing", command=command(THERMOSTAT))
    pid = execute(tools.get("server_pid"), {})
    assert psutil.pid_exists(pid)
    tools.close()
    assert not psutil.pid_exists(pid)
    assert not [t for t in threading.enumerate() if t.name.startswith("mcp-closing")]
    with pytest.raises(ToolExecutionError, match="'closing' is not connected"):
        execute(tools.get("read_sensor"), {"name": "kitchen"})
    tools.close()  # twice is fine
    gc.collect()  # an unclosed pipe or transport would warn now, and warnings fail tests


def test_a_server_that_exits_mid_call_fails_the_call_readably_and_comes_back() -> None:
    with mcp_toolset("thermo", command=command(THERMOSTAT)) as tools:
        with pytest.raises(ToolExecutionError) as err:
            execute(tools.get("crash"), {})
        assert "'thermo' closed the connection" in str(err.value)
        assert "may have run, so it is not repeated" in str(err.value)
        # the next call re-spawns the server (tests/tools/test_mcp_reconnect.py has more)
        assert execute(tools.get("read_sensor"), {"name": "kitchen"})["celsius"] == 19.0


def test_a_bad_command_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        mcp_toolset("thermo", command=["/nonexistent/thermostat", "--serve"])
    assert str(err.value) == (
        "cannot connect to MCP server 'thermo' (/nonexistent/thermostat --serve): "
        "No such file or directory: /nonexistent/thermostat"
    )


def test_a_server_that_dies_at_start_says_why() -> None:
    crash = [sys.executable, "-c", "import sys; sys.exit('THERMO_KEY is not set')"]
    with pytest.raises(ConfigError, match="its stderr ends: THERMO_KEY is not set"):
        mcp_toolset("thermo", command=crash)


def test_a_server_that_never_answers_times_out_and_is_stopped() -> None:
    mute = [sys.executable, "-c", "import time; time.sleep(60)"]
    before = set(psutil.Process().children(recursive=True))
    started = time.monotonic()
    with pytest.raises(ConfigError, match="did not answer within 0.5 s"):
        mcp_toolset("mute", command=mute, timeout_s=0.5)
    assert time.monotonic() - started < 6  # 0.5 s, then the SDK's grace after closing stdin
    assert set(psutil.Process().children(recursive=True)) <= before


def test_an_unreachable_url_is_a_config_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ConfigError) as err:
        mcp_toolset("thermo", url=f"http://127.0.0.1:{port}/mcp", timeout_s=2)
    assert str(err.value).startswith(
        f"cannot connect to MCP server 'thermo' (http://127.0.0.1:{port}/mcp): "
    )


@pytest.mark.parametrize("where", [{}, {"command": ["x"], "url": "http://127.0.0.1:1/mcp"}])
def test_exactly_one_of_command_and_url(where: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="needs exactly one of a command and a url"):
        mcp_toolset("thermo", **where)  # type: ignore[arg-type]
