"""What one skill's canary runs with on this device: the skill (its scorer and labeler), the
tools to propose calls with, and that skill's own recent logged turns as labelled rows.

The tools are the skill's own when the device can build them. When it cannot (an MCP server
that is down, a client's tools that come with each request) they are rebuilt from the
schemas the log stored for the skill's newest turn: the canary only proposes and validates
calls, it never runs one, so schemas are all it needs. With neither, the canary cannot run
now: the update round says so and tries again next time; a release is never rejected for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from edge_agent.errors import AdapterError, ConfigError, EdgeAgentError, SealError
from edge_agent.skills.registry import CLIENT_PREFIX
from edge_agent.skills.skill import LabeledTurn, Skill
from edge_agent.tools import Toolset
from edge_agent.types import Interaction

if TYPE_CHECKING:
    from edge_agent.logstore import LogStore
    from edge_agent.settings import Settings

__all__ = ["CanarySubject", "Logged", "SkillHost", "canary_subject", "logged_turns"]

log = logging.getLogger(__name__)

SCAN_PER_TURN = 32  # rows read per wanted turn: other skills share the log


class SkillHost(Protocol):
    """What the canary needs to know a skill on this device (`edge_agent.runtime.Runtime`)."""

    settings: Settings

    def skill(self, name: str) -> Skill: ...
    def toolset(self, name: str) -> Toolset: ...
    def log(self) -> LogStore | None: ...


@dataclass(frozen=True)
class Logged:
    """A skill's recent labelled turns, newest first, one per request; and the fingerprint
    of the tools its newest turn saw (None: no turn of it names one)."""

    turns: list[LabeledTurn]
    fingerprint: str | None = None


@dataclass(frozen=True)
class CanarySubject:
    skill: Skill
    toolset: Toolset
    recent: list[LabeledTurn]
    tools_from: str  # said in the report: the skill's own tools, or the logged schemas


def canary_subject(host: SkillHost, name: str, limit: int) -> CanarySubject:
    """Everything the canary of skill `name` needs; AdapterError (or the skill's own
    ConfigError) when this device cannot check it now."""
    skill = skill_for(host, name)
    store = readable_log(host)
    logged = logged_turns(store, skill, limit)
    toolset, where = _toolset(host, skill, store, logged.fingerprint)
    return CanarySubject(skill, toolset, logged.turns, where)


def skill_for(host: SkillHost, name: str) -> Skill:
    """The skill as the device defines it; a client's skill (tools per request, named in
    the settings or ``client-<fingerprint>``) is one with the default scorer and labeler."""
    try:
        return host.skill(name)
    except ConfigError:
        if not per_request(name, host.settings):
            raise
        return Skill(name, toolset=None, source="client")


def per_request(name: str, settings: Settings) -> bool:
    """A skill whose tools come with each request: a client's, by fingerprint or by a name
    the settings give it without a tool source."""
    config = settings.skills.get(name)
    sourceless = config is not None and not (config.python or config.mcp_command or config.mcp_url)
    return name.startswith(CLIENT_PREFIX) or sourceless


def readable_log(host: SkillHost) -> LogStore | None:
    try:
        return host.log()
    except EdgeAgentError as exc:  # e.g. the log's key is not available to this process
        log.warning("the interaction log cannot be read (%s): no recent turns checked", exc)
        return None


def logged_turns(store: LogStore | None, skill: Skill, limit: int) -> Logged:
    """Up to `limit` recent turns of `skill` only, labelled by the skill's labeler, newest
    first, the newest of each request; [] without a readable log."""
    if store is None or limit <= 0:
        return Logged([])
    try:
        rows = store.rows(limit=limit * SCAN_PER_TURN, newest=True)
    except EdgeAgentError as exc:
        log.warning("recent turns of %s not read: %s", skill.name, exc)
        return Logged([])
    found: dict[str, LabeledTurn] = {}
    fingerprint = None
    for row in reversed(rows):
        interaction = _decoded(store, row)
        if interaction is None or interaction.result.skill != skill.name:
            continue
        fingerprint = fingerprint or interaction.result.toolset
        if any(m.role == "tool" for m in interaction.messages):
            continue  # it went on from a tool's result: its words alone do not replay it
        turn = skill.label(interaction)
        if turn is not None and len(found) < limit:
            found.setdefault(turn.key, turn)
        if len(found) >= limit and fingerprint is not None:
            break
    return Logged(list(found.values()), fingerprint)


def _decoded(store: LogStore, row: dict) -> Interaction | None:
    try:
        return store.decode(row)
    except SealError:
        return None  # shredded or damaged: `edge-agent log verify` reports it


def _toolset(
    host: SkillHost, skill: Skill, store: LogStore | None, fingerprint: str | None
) -> tuple[Toolset, str]:
    problem = "its tools come with each request"
    if skill.toolset is not None:
        try:
            return host.toolset(skill.name), "its own tools"
        except (EdgeAgentError, OSError) as exc:  # e.g. its MCP server is down
            problem = f"its tools cannot be built now ({exc})"
    logged = logged_toolset(store, skill.name, fingerprint)
    if logged is None:
        raise AdapterError(
            f"cannot check {skill.name} on this device now: {problem}, and no logged turn "
            "of it has tool schemas; nothing was installed, the next round tries again"
        )
    return logged, f"the tools its turns logged ({fingerprint})"


def logged_toolset(store: LogStore | None, name: str, fingerprint: str | None) -> Toolset | None:
    """The tools the log stored under `fingerprint`, as a toolset that validates calls but
    cannot run them; None when the log has none."""
    if store is None or fingerprint is None:
        return None
    try:
        schemas = store.toolset_schemas(fingerprint)
        return Toolset.from_schemas(name, schemas) if schemas else None
    except EdgeAgentError as exc:
        log.warning("the logged tools of %s (%s) are not usable: %s", name, fingerprint, exc)
        return None
