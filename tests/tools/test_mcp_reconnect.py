"""MCP toolsets outlive their servers: a killed stdio server is re-spawned, a restarted HTTP
server reconnected, a hung one times out, and no call that may have run is ever sent twice
(real thermostat servers from tests/mcp_servers; the bell tool counts its runs in a file)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from edge_agent.errors import ToolExecutionError, ToolTimeoutError
from edge_agent.tools import execute
from edge_agent.tools.mcp import McpToolset, mcp_toolset
from edge_agent.tools.mcp.session import Backoff
from tests.mcp_servers import THERMOSTAT, command, http_server


@pytest.fixture
def bell_log(tmp_path: Path) -> Path:
    return tmp_path / "bell.log"


def rings(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def kill_server(tools: McpToolset) -> int:
    """SIGKILL the stdio server between calls; returns once the toolset has seen it go."""
    pid: int = execute(tools.get("server_pid"), {})
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not tools.connected)
    return pid


@pytest.fixture
def stdio_tools(bell_log: Path) -> Iterator[McpToolset]:
    env = {"THERMOSTAT_BELL_LOG": str(bell_log)}
    with mcp_toolset("thermo", command=command(THERMOSTAT), env=env, timeout_s=2.0) as tools:
        yield tools


# --- stdio ------------------------------------------------------------------------------------


def test_a_killed_stdio_server_is_respawned_by_the_next_call(stdio_tools: McpToolset) -> None:
    old = kill_server(stdio_tools)
    started = time.monotonic()
    new = execute(stdio_tools.get("server_pid"), {})  # never sent to the dead one: no error
    assert new != old and psutil.pid_exists(new)
    assert time.monotonic() - started < 2.0  # a re-spawn, a re-list and the call
    assert stdio_tools.connected
    assert execute(stdio_tools.get("read_sensor"), {"name": "kitchen"})["celsius"] == 19.0


def test_close_after_reconnects_leaves_no_process_or_thread(bell_log: Path) -> None:
    before = set(psutil.Process().children(recursive=True))
    tools = mcp_toolset("closing", command=command(THERMOSTAT))
    kill_server(tools)
    kill_server(tools)
    pid = execute(tools.get("server_pid"), {})
    tools.close()
    assert not psutil.pid_exists(pid)
    assert set(psutil.Process().children(recursive=True)) <= before
    assert not [t for t in threading.enumerate() if t.name.startswith("mcp-closing")]
    with pytest.raises(ToolExecutionError, match="'closing' is not connected"):
        execute(tools.get("server_pid"), {})


def test_an_actuating_call_cut_off_by_the_server_dying_is_not_repeated(
    stdio_tools: McpToolset, bell_log: Path
) -> None:
    with pytest.raises(ToolExecutionError, match="may have run, so it is not repeated"):
        execute(stdio_tools.get("ring_bell"), {"then_exit": True})
    assert rings(bell_log) == 1
    assert execute(stdio_tools.get("ring_bell"), {}) == "rung"  # on a re-spawned server
    assert rings(bell_log) == 2


def test_a_hung_server_times_out_within_the_call_timeout(stdio_tools: McpToolset) -> None:
    pid = execute(stdio_tools.get("server_pid"), {})
    os.kill(pid, signal.SIGSTOP)  # alive, connected, answers nothing
    try:
        started = time.monotonic()
        with pytest.raises(ToolTimeoutError, match="did not run read_sensor within 2 s"):
            execute(stdio_tools.get("read_sensor"), {"name": "kitchen"}, timeout_s=30)
        assert 1.9 < time.monotonic() - started < 3.0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert execute(stdio_tools.get("server_pid"), {}) == pid  # the same session, not a new one


def test_a_changed_tool_list_is_taken_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version = tmp_path / "version"
    env = {"THERMOSTAT_VERSION_FILE": str(version)}
    with mcp_toolset("thermo", command=command(THERMOSTAT), env=env) as tools:
        unlock, before = tools.get("unlock_door"), tools.fingerprint
        version.write_text("2")
        kill_server(tools)
        with caplog.at_level(logging.WARNING, "edge_agent.tools.mcp"):
            # its own tool is listed as before, so this call goes out on the new list
            assert execute(tools.get("read_sensor"), {"name": "bedroom"})["celsius"] == 17.5
        [changed] = [r.getMessage() for r in caplog.records if "other tools" in r.getMessage()]
        assert "added: open_window; removed: unlock_door" in changed
        assert tools.fingerprint != before
        assert "unlock_door" not in tools and "open_window" in tools
        assert {s["name"]: s["effect"] for s in tools.schemas()}["open_window"] == "actuating"
        assert execute(tools.get("open_window"), {"room": "kitchen"}) == "kitchen window open"
        # a call chosen from the old list (the grammar of a turn begun before) is refused
        with pytest.raises(ToolExecutionError, match="no longer lists it .*unlock_door was not"):
            execute(unlock, {"door": "front door"})


# --- streamable HTTP --------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["2026-protocol", "session-id"])
def test_a_restarted_http_server_on_the_same_port_is_reconnected(
    legacy: bool, bell_log: Path
) -> None:
    """A session-id (pre-2026) server forgets the session on restart and answers 404: the
    call never ran there, so it goes out once on a new session, and rings once."""
    env = {"THERMOSTAT_PORT": str(free_port()), "THERMOSTAT_BELL_LOG": str(bell_log)}
    if legacy:
        env["THERMOSTAT_LEGACY"] = "1"
    with http_server(THERMOSTAT, env=env) as url:
        tools = mcp_toolset("thermo", url=url, timeout_s=3.0)
        old = execute(tools.get("server_pid"), {})
    try:
        with http_server(THERMOSTAT, env=env):
            assert execute(tools.get("ring_bell"), {}) == "rung"
            assert rings(bell_log) == 1
            assert execute(tools.get("server_pid"), {}) != old
    finally:
        tools.close()


def test_calls_while_the_http_server_is_down_fail_fast_then_resume(bell_log: Path) -> None:
    env = {"THERMOSTAT_PORT": str(free_port()), "THERMOSTAT_BELL_LOG": str(bell_log)}
    with http_server(THERMOSTAT, env=env) as url:
        tools = mcp_toolset("thermo", url=url, timeout_s=3.0)
    try:
        started = time.monotonic()
        with pytest.raises(ToolExecutionError, match="closed the connection"):
            execute(tools.get("server_pid"), {})  # the call found it gone
        with pytest.raises(ToolExecutionError, match="could not reconnect: cannot connect"):
            execute(tools.get("server_pid"), {})
        with pytest.raises(ToolExecutionError, match=r"the next reconnect is in 0\.\d s"):
            execute(tools.get("server_pid"), {})  # backing off: no try at all
        assert time.monotonic() - started < 1.0
        with http_server(THERMOSTAT, env=env):
            time.sleep(tools.next_reconnect_s)
            assert execute(tools.get("ring_bell"), {}) == "rung"
            assert tools.connected and tools.next_reconnect_s == 0
        assert rings(bell_log) == 1
    finally:
        tools.close()


def test_an_actuating_http_call_cut_off_is_not_repeated(bell_log: Path) -> None:
    env = {"THERMOSTAT_PORT": str(free_port()), "THERMOSTAT_BELL_LOG": str(bell_log)}
    with http_server(THERMOSTAT, env=env) as url:
        tools = mcp_toolset("thermo", url=url, timeout_s=3.0)
        try:
            with pytest.raises(ToolExecutionError, match="may have run, so it is not repeated"):
                execute(tools.get("ring_bell"), {"then_exit": True})
            assert rings(bell_log) == 1
        except BaseException:
            tools.close()
            raise
    try:
        with http_server(THERMOSTAT, env=env):
            assert execute(tools.get("ring_bell"), {}) == "rung"
        assert rings(bell_log) == 2
    finally:
        tools.close()


# --- backoff ----------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_bound_and_resets() -> None:
    backoff = Backoff(first_s=10.0, max_s=35.0)
    assert backoff.wait_s() == 0
    waits = []
    for _ in range(4):
        backoff.failed()
        waits.append(round(backoff.wait_s()))
    assert waits == [10, 20, 35, 35]
    backoff.succeeded()
    assert backoff.wait_s() == 0
