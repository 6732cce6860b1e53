"""Skills by name: built in, installed by a package, named in the config, or a client's tools.

Resolution, first match wins: a ``[skills.NAME]`` table with a tool source (``python``,
``mcp_command``, ``mcp_url``); a package's entry point in the ``edge_agent.skills`` group;
a built-in skill; a toolset an application registered (``register_toolset``). A table
without a tool source only changes settings (``route``, …) of the skill found below it, or,
when none is, declares a skill whose tools a client sends with each request.

A package makes a skill installable like this (``pyproject.toml``)::

    [project.entry-points."edge_agent.skills"]
    thermostat = "my_thermostat.skill:skill"     # a Skill, a Toolset, or a factory of one
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.settings import Settings, SkillConfig
from edge_agent.skills.skill import Skill
from edge_agent.tools import Toolset, available_toolsets, get_toolset

__all__ = [
    "ENTRY_POINT_GROUP",
    "available_skills",
    "client_skill",
    "device_skills",
    "get_skill",
]

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "edge_agent.skills"
# name → "module:attribute"; strings, so a skill's module is imported only when used
BUILTIN_SKILLS: dict[str, str] = {
    "home": "edge_agent.skills.home.skill:skill",
    "system": "edge_agent.skills.system:skill",
    "bfcl": "edge_agent.skills.bfcl.skill:skill",
}
CLIENT_PREFIX = "client-"


def get_skill(name: str, settings: Settings) -> Skill:
    """The skill called `name` as this device's settings define it."""
    config = settings.skills.get(name)
    skill = _configured(name, config) if config else None
    skill = skill or _installed(name) or _builtin(name) or _registered(name)
    if skill is None and config is not None:  # a client's skill: its tools come per request
        skill = Skill(name, toolset=None, source="config client")
    if skill is None:
        known = ", ".join(available_skills(settings))
        raise ConfigError(f"no skill named {name!r}; available: {known}")
    return _with_settings(skill, config) if config else skill


def available_skills(settings: Settings) -> list[str]:
    names = {*BUILTIN_SKILLS, *available_toolsets(), *settings.skills}
    names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def device_skills(settings: Settings) -> list[str]:
    """The skills this device runs: `tools` (unless plain chat) and every configured one;
    what `run`, `chat`, `serve` and the adapter updater all see."""
    names = [] if settings.tools == "none" else [settings.tools]
    return names + [n for n in settings.skills if n not in names]


def client_skill(toolset: Toolset, name: str | None = None) -> Skill:
    """The skill of tools a client sends with its requests (OpenAI ``tools=``): the name it
    chose, else one derived from the schemas' fingerprint, so the same tools are one skill
    across requests, restarts and devices."""
    return Skill(
        name=name or CLIENT_PREFIX + toolset.fingerprint[:12], toolset=None, source="client"
    )


def _configured(name: str, config: SkillConfig) -> Skill | None:
    if config.python:
        return _as_skill(name, _load(config.python), f"config {config.python}")
    if config.mcp_command or config.mcp_url:
        return Skill(name, toolset=lambda _s: _mcp_toolset(name, config),
                     description=config.description, source="config mcp")  # fmt: skip
    return None


def _mcp_toolset(name: str, config: SkillConfig) -> Toolset:
    from edge_agent.tools.mcp import mcp_toolset

    return mcp_toolset(
        name, command=config.mcp_command, url=config.mcp_url, env=config.mcp_env,
        headers=config.mcp_headers, timeout_s=config.mcp_timeout_s,
    )  # fmt: skip


def _installed(name: str) -> Skill | None:
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        return None
    try:
        return _as_skill(name, found[0].load(), f"entry point {found[0].value}")
    except EdgeAgentError:
        raise
    except Exception as exc:  # a broken third-party package must not take the device down
        raise ConfigError(f"skill {name!r} from {found[0].value} failed to load: {exc}") from exc


def _builtin(name: str) -> Skill | None:
    if name not in BUILTIN_SKILLS:
        return None
    return _as_skill(name, _load(BUILTIN_SKILLS[name]), "builtin")


def _registered(name: str) -> Skill | None:
    if name not in available_toolsets():
        return None
    return Skill(name, toolset=lambda _s: get_toolset(name), source="registered")


def _load(target: str) -> Any:
    module, _, attribute = target.partition(":")
    try:
        value: Any = importlib.import_module(module)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load skill {target!r}: {exc}") from exc
    return value


def _as_skill(name: str, value: Any, source: str) -> Skill:
    """A Skill as given, or one around a Toolset or a factory of either."""
    if isinstance(value, Skill):
        return dataclasses.replace(value, name=name, source=source)
    if isinstance(value, Toolset):
        return Skill(name, toolset=lambda _s: value, description=value.description, source=source)
    if callable(value):
        return Skill(name, toolset=lambda s: _toolset_from(name, value, s), source=source)
    raise ConfigError(f"skill {name!r} from {source} is a {type(value).__name__}, not a Skill, "
                      "a Toolset or a factory")  # fmt: skip


def _toolset_from(name: str, factory: Any, settings: Settings) -> Toolset:
    made = factory(settings)
    if isinstance(made, Skill):
        return made.build_toolset(settings)
    if not isinstance(made, Toolset):
        raise ConfigError(f"skill {name!r}: its factory returned a {type(made).__name__}, "
                          "not a Toolset")  # fmt: skip
    return made


def _with_settings(skill: Skill, config: SkillConfig) -> Skill:
    changes: dict[str, Any] = {}
    if config.route is not None:
        changes["route"] = config.route
    if config.teacher_labels_offline is not None:
        changes["teacher_labels_offline"] = config.teacher_labels_offline
    if config.description:
        changes["description"] = config.description
    return dataclasses.replace(skill, **changes) if changes else skill
