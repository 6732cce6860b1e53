"""Skills by name: built in, from a package's entry point, from config, registered in code."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.settings import Settings, SkillConfig
from edge_agent.skills.registry import available_skills, client_skill, device_skills, get_skill
from edge_agent.tools import Toolset, register_toolset
from edge_agent.tools.registry import _unregister_toolset
from tests.skills.thermostat_skill import read_sensor, set_temperature


def _installed_package(root: Path, name: str, target: str) -> None:
    """A real installed distribution (dist-info on sys.path) declaring one skill."""
    info = root / f"{name}_pkg-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[edge_agent.skills]\n{name} = {target}\n")


def test_builtin_skills_are_ordinary_skills() -> None:
    settings = Settings()
    assert {"home", "system", "bfcl"} <= set(available_skills(settings))
    home = get_skill("home", settings)
    assert home.build_toolset(settings).name == "home"
    assert "HassTurnOn" in home.build_toolset(settings)
    with pytest.raises(ConfigError, match="comes with each request|come with each request"):
        get_skill("bfcl", settings).build_toolset(settings)


def test_an_installed_package_adds_a_skill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _installed_package(tmp_path, "thermostat", "tests.skills.thermostat_skill:skill")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = Settings()
    assert "thermostat" in available_skills(settings)
    skill = get_skill("thermostat", settings)
    assert skill.route == "teacher-first"
    assert skill.source.startswith("entry point")
    assert skill.build_toolset(settings).names == ["set_temperature", "read_sensor"]


def test_a_broken_entry_point_is_one_readable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _installed_package(tmp_path, "broken", "tests.skills.no_such_module:skill")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="broken"):
        get_skill("broken", Settings())


@pytest.mark.parametrize(
    "target", ["tests.skills.thermostat_skill:skill", "tests.skills.thermostat_skill:a_toolset",
               "tests.skills.thermostat_skill:toolset"],
)  # fmt: skip
def test_config_names_a_python_skill_toolset_or_factory(target: str) -> None:
    settings = Settings(skills={"heat": SkillConfig(python=target, route="local-only")})
    skill = get_skill("heat", settings)
    assert skill.name == "heat" and skill.route == "local-only"  # the config's name and route
    assert skill.build_toolset(settings).names == ["set_temperature", "read_sensor"]
    assert "heat" in device_skills(settings)


def test_config_errors_are_typed_and_name_the_problem() -> None:
    bad = Settings(skills={"x": SkillConfig(python="tests.skills.thermostat_skill:not_a_skill")})
    with pytest.raises(ConfigError, match="int, not a Skill"):
        get_skill("x", bad)
    missing = Settings(skills={"x": SkillConfig(python="tests.skills.nope:skill")})
    with pytest.raises(ConfigError, match="cannot load skill"):
        get_skill("x", missing)
    with pytest.raises(ConfigError, match="no skill named 'nothing'"):
        get_skill("nothing", Settings())
    with pytest.raises(ValueError, match="one place"):
        SkillConfig(python="a:b", mcp_url="http://127.0.0.1:1/mcp")


def test_a_table_without_a_source_changes_a_builtin_skills_settings() -> None:
    settings = Settings(skills={"home": SkillConfig(route="teacher-first")})
    assert get_skill("home", settings).route == "teacher-first"
    assert get_skill("home", Settings()).route == "local-first"
    assert device_skills(settings) == ["home"]  # named once


def test_a_registered_toolset_is_a_skill() -> None:
    register_toolset("thermo_registered", Toolset("thermo_registered", [read_sensor]))
    try:
        settings = Settings()
        assert get_skill("thermo_registered", settings).build_toolset(settings).names == [
            "read_sensor"
        ]
    finally:
        _unregister_toolset("thermo_registered")


def test_a_clients_tools_are_one_skill_by_their_schemas() -> None:
    one = Toolset("client", [set_temperature, read_sensor])
    same = Toolset.from_schemas("elsewhere", one.schemas())
    other = Toolset("client", [read_sensor, set_temperature])  # order is part of the prompt
    assert client_skill(one).name == client_skill(same).name
    assert client_skill(one).name != client_skill(other).name
    assert client_skill(one, "snips").name == "snips"
    assert client_skill(one).toolset is None


def test_a_table_naming_no_known_skill_declares_a_clients_skill() -> None:
    settings = Settings(skills={"snips": SkillConfig(route="teacher-first")})
    skill = get_skill("snips", settings)
    assert skill.toolset is None and skill.route == "teacher-first"
    assert skill.source == "config client"
