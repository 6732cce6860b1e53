"""An MCP server's tools through the agent loop and the skill registry (a real stdio server;
the model is ScriptedBackend, the named test seam)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.settings import Settings, SkillConfig, config_file_path, load_settings
from edge_agent.skills.registry import device_skills, get_skill
from edge_agent.tools import execute
from edge_agent.tools.mcp import McpToolset, mcp_toolset
from edge_agent.types import Effect
from tests.mcp_servers import THERMOSTAT, command


@pytest.fixture(scope="module")
def thermostat() -> Iterator[McpToolset]:
    """One server for every turn of this module: the toolset serves turn after turn."""
    with mcp_toolset("thermo", command=command(THERMOSTAT)) as tools:
        yield tools


def call(name: str, **arguments: object) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def test_the_agent_runs_an_actuating_mcp_call(thermostat: McpToolset) -> None:
    agent = Agent(
        ScriptedBackend([call("set_temperature", room="kitchen", celsius=21), '{"answer": "ok"}']),
        thermostat,
    )
    result = agent.run("set the kitchen to 21 degrees")
    [done] = result.tool_calls
    assert (done.status, done.effect) == ("ok", Effect.ACTUATING)
    assert done.result == "kitchen set to 21 °C"
    assert result.outcome == "answered"
    # the server's own state changed, as a later turn reads it
    assert execute(thermostat.get("read_sensor"), {"name": "kitchen"})["celsius"] == 21


def test_an_unannotated_mcp_tool_needs_confirmation(thermostat: McpToolset) -> None:
    agent = Agent(ScriptedBackend([call("unlock_door", door="front door")]), thermostat)
    result = agent.run("unlock the front door")
    assert result.outcome == "needs_confirmation"
    [asked] = result.tool_calls
    assert asked.status == "needs_confirmation" and asked.effect is Effect.DANGEROUS
    assert "confirm dangerous" in (asked.error or "")

    confirmed = Agent(
        ScriptedBackend([call("unlock_door", door="front door"), '{"answer": "ok"}']), thermostat
    ).run("unlock the front door", confirmed=True)
    assert confirmed.tool_calls[0].result == "front door unlocked"


def test_a_servers_error_reaches_the_model(thermostat: McpToolset) -> None:
    agent = Agent(
        ScriptedBackend([call("boiler_status"), '{"answer": "The boiler is offline."}']),
        thermostat,
    )
    result = agent.run("is the boiler running?")
    assert result.tool_calls[0].status == "error"
    fed_back = agent.backend.requests[1].messages[-1].content  # type: ignore[attr-defined]
    assert "boiler offline since 06:00" in fed_back


def test_a_configured_mcp_skill_builds_its_toolset() -> None:
    settings = Settings(skills={"thermo": SkillConfig(mcp_command=command(THERMOSTAT))})
    skill = get_skill("thermo", settings)
    assert skill.source == "config mcp"
    tools = skill.build_toolset(settings)
    try:
        assert isinstance(tools, McpToolset) and "set_temperature" in tools
        assert tools.name == "thermo"
    finally:
        tools.close()


def test_config_toml_names_an_mcp_skill(edge_home: Path) -> None:
    path = config_file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[skills.thermo]\n"
        f"mcp_command = {json.dumps(command(THERMOSTAT))}\n"
        'mcp_env = { THERMOSTAT_OUTSIDE_C = "4" }\n'
        "mcp_timeout_s = 10\n"
        'route = "teacher-first"\n'
    )
    settings = load_settings()
    assert "thermo" in device_skills(settings)
    skill = get_skill("thermo", settings)
    assert skill.route == "teacher-first"
    with skill.build_toolset(settings) as tools:  # type: ignore[attr-defined]
        assert execute(tools.get("read_sensor"), {"name": "outside"})["celsius"] == 4
        assert tools.get("read_sensor").timeout_s == 10
