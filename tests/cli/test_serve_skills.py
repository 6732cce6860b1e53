"""Which skills `serve` offers as edge-agent/<name> models by default."""

from __future__ import annotations

import pytest

from edge_agent.cli.serve import served_skills
from edge_agent.settings import Settings, SkillConfig


def test_serve_offers_the_device_skills_that_have_tools_of_their_own(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(
        tools="home",
        skills={
            "heat": SkillConfig(python="tests.skills.thermostat_skill:skill"),
            "snips": SkillConfig(route="teacher-first"),  # a client's tools: nothing to serve
            "broken": SkillConfig(python="tests.skills.nowhere:skill"),
        },
    )
    assert served_skills(settings) == "home,heat"
    err = capsys.readouterr().err
    assert "not serving skill 'broken'" in err and "snips" not in err


def test_plain_chat_devices_serve_their_configured_skills_only() -> None:
    settings = Settings(
        tools="none", skills={"heat": SkillConfig(python="tests.skills.thermostat_skill:a_toolset")}
    )
    assert served_skills(settings) == "heat"
