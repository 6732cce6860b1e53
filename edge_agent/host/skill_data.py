"""A skill's data in the ingest store: its turns, its tools rebuilt from the logged schemas
alone, its rows labelled by the skill's labeler and checked against those schemas.

Turns are grouped by ``result.skill``; a turn of one skill never reaches another skill's
rows, split or gate. Turns from devices older than skills name none: they ran the home tools
(`LEGACY_SKILL`). The host needs none of a skill's code: its toolset is
``Toolset.from_schemas(skill, schemas)`` of the fingerprint each turn names. A skill the host
does know (built in, installed, configured) lends its labeler and scorer, and its own toolset
to turns that logged no schemas.

When a skill's turns name several tool sets (its tools changed), it trains on the newest: the
set of the most recently recorded turn. A skill gets one adapter, and with an adapter the
prompt no longer lists the tools, so the adapter must know the devices' current tools by
heart. Older turns still count when their call validates against the newest schemas too (a
tool added beside it leaves it intact); a call the newest tools no longer accept is dropped
as ``stale_toolset``. Every call is first checked against the schemas its own turn logged:
one that does not validate there is dropped as ``invalid_call``.

Sync and the store keep schemas as canonical JSON (object keys sorted), which loses the order
of a tool's ``properties``, and the grammar writes arguments in that order. Each tool's schema
names the order (`edge_agent.tools.ARGUMENT_ORDER`), so the rebuilt tools declare it again;
for schemas of devices older than that, see `_device_order`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from edge_agent.errors import EdgeAgentError, ToolError
from edge_agent.host.curate import (
    LEGACY_SKILL,
    SPLIT_SEED,
    Curated,
    Record,
    curate,
    drop_reason,
    record_from_interaction,
)
from edge_agent.settings import Settings
from edge_agent.skills.registry import get_skill
from edge_agent.skills.skill import LabeledTurn, Scorer, Skill, exact_call, labeled_turn
from edge_agent.tools import ARGUMENT_ORDER, Toolset
from edge_agent.types import Interaction, ToolCall

__all__ = [
    "LEGACY_SKILL",
    "SchemaStore",
    "SkillData",
    "StoredTurn",
    "curate_skill",
    "known_skill",
    "skill_data",
    "turns_by_skill",
]

log = logging.getLogger(__name__)


class SchemaStore(Protocol):
    """What this module reads of the ingest store (`IngestStore` is one)."""

    def records(self) -> list[dict[str, Any]]: ...

    def toolset_schemas(self, fingerprint: str) -> list[dict[str, Any]] | None: ...


@dataclass(frozen=True)
class StoredTurn:
    interaction: Interaction
    recorded_at: float  # when the device recorded it (when the host received it, if unknown)

    @property
    def skill(self) -> str:
        return self.interaction.result.skill or LEGACY_SKILL

    @property
    def fingerprint(self) -> str | None:
        return self.interaction.result.toolset


def turns_by_skill(
    store: SchemaStore, dropped: dict[str, int] | None = None
) -> dict[str, list[StoredTurn]]:
    """Every stored turn, by skill, oldest first. A body that no longer reads as an
    interaction is skipped and counted in ``dropped["unreadable"]``."""
    grouped: dict[str, list[StoredTurn]] = defaultdict(list)
    for row in store.records():
        try:
            interaction = Interaction.model_validate_json(row["body"])
        except ValidationError:
            log.warning("skipping unreadable record %s of %s", row["id"], row["device_id"])
            if dropped is not None:
                dropped["unreadable"] = dropped.get("unreadable", 0) + 1
            continue
        turn = StoredTurn(interaction, float(row["recorded_at"] or row["received"]))
        grouped[turn.skill].append(turn)
    return {name: sorted(turns, key=lambda t: t.recorded_at) for name, turns in grouped.items()}


def known_skill(name: str, settings: Settings) -> Skill | None:
    """The skill as this host knows it (its labeler, scorer, own toolset), or None."""
    try:
        return get_skill(name, settings)
    except EdgeAgentError:
        return None


@dataclass
class SkillData:
    name: str
    toolset: Toolset | None  # what it trains on: the newest logged tool set
    fingerprint: str | None  # the newest tool set's (None: the host's own toolset)
    fingerprints: list[str]  # every tool set its turns named, first seen first
    records: list[Record]  # labelled, checked rows, as curation takes them
    scorer: Scorer = exact_call
    turns: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def skill_data(
    name: str,
    turns: Sequence[StoredTurn],
    store: SchemaStore,
    settings: Settings | None = None,
) -> SkillData:
    """`name`'s rows from its own `turns` (give only this skill's turns). `settings`: the
    host's, where it configures skills (default: read from the environment)."""
    settings = settings or Settings()
    skill = known_skill(name, settings)
    toolsets = _Toolsets(name, store, skill, settings)
    newest_fp, newest = toolsets.newest(turns)
    data = SkillData(name, newest, newest_fp, _distinct(t.fingerprint for t in turns), [],
                     skill.scorer if skill else exact_call, len(turns))  # fmt: skip
    label = skill.label if skill else labeled_turn
    for turn in turns:
        row = label(turn.interaction)
        if row is None:
            _count(data.dropped, _why_unlabeled(turn.interaction))
            continue
        call, problem = _checked(row.call, toolsets.own(turn), newest)
        if problem is not None:
            _count(data.dropped, problem)
            continue
        data.records.append(_as_record(row, call, name))
    return data


def curate_skill(
    data: SkillData, *, seed: int = SPLIT_SEED, validation: float = 0.1, evaluation: float = 0.1
) -> Curated:
    """Dedupe and split by request (`LabeledTurn.key`): train, validation and an eval part of
    held-out teacher labels only."""
    out = curate(data.records, seed=seed, validation=validation, evaluation=evaluation,
                 teacher_eval=True)  # fmt: skip
    for reason, n in data.dropped.items():
        out.dropped[reason] = out.dropped.get(reason, 0) + n
    return out


class _Toolsets:
    """The tool sets a skill's turns name, rebuilt once per fingerprint."""

    def __init__(self, name: str, store: SchemaStore, skill: Skill | None, settings: Settings):
        self.name, self.store, self.skill, self.settings = name, store, skill, settings
        self._built: dict[str | None, Toolset | None] = {}

    def get(self, fingerprint: str | None) -> Toolset | None:
        if fingerprint not in self._built:
            self._built[fingerprint] = self._build(fingerprint)
        return self._built[fingerprint]

    def own(self, turn: StoredTurn) -> Toolset | None:
        """The tools the turn's model saw: its logged schemas, else the host's build."""
        return self.get(turn.fingerprint) or self.get(None)

    def newest(self, turns: Sequence[StoredTurn]) -> tuple[str | None, Toolset | None]:
        for turn in sorted(turns, key=lambda t: t.recorded_at, reverse=True):
            if turn.fingerprint is not None and self.get(turn.fingerprint) is not None:
                return turn.fingerprint, self.get(turn.fingerprint)
        return None, self.get(None)

    def _build(self, fingerprint: str | None) -> Toolset | None:
        if fingerprint is None:
            return self._hosts_own()
        own = self.get(None)
        if own is not None and fingerprint in (own.fingerprint, own.legacy_fingerprint):
            return own  # the very same tools, with their declared order (see _device_order)
        schemas = self.store.toolset_schemas(fingerprint)
        if schemas is None:
            return None
        try:
            return Toolset.from_schemas(self.name, [_device_order(t) for t in schemas])
        except ToolError as exc:  # a device's schemas this host cannot rebuild
            log.warning("tool set %s of skill %s cannot be rebuilt: %s", fingerprint, self.name,
                        exc)  # fmt: skip
            return None

    def _hosts_own(self) -> Toolset | None:
        if self.skill is None or self.skill.toolset is None:
            return None
        try:
            tools = self.skill.build_toolset(self.settings)
        except EdgeAgentError as exc:
            log.warning("skill %s has no toolset on this host: %s", self.name, exc)
            return None
        if tools.name == self.name:
            return tools
        return Toolset(self.name, tools, tools.description, tools.prompt, tools.context)


def _device_order(schema: dict[str, Any]) -> dict[str, Any]:
    """The tool's properties in the order the device's grammar writes them: the order its
    schema names (`ARGUMENT_ORDER`, which `Toolset.from_schemas` follows). A device older
    than that logged none, and sorted keys lost the declared order: the required keys come
    first in the ``required`` list's order, then the optional ones alphabetically (a guess,
    unless the host knows the skill and builds the same tools itself: `legacy_fingerprint`).
    Training on another order than the device decodes would teach calls the grammar never
    lets out."""
    if ARGUMENT_ORDER in schema:
        return schema
    parameters = schema.get("parameters")
    if not isinstance(parameters, dict) or not isinstance(parameters.get("properties"), dict):
        return schema
    props, required = parameters["properties"], parameters.get("required") or []
    first = [k for k in required if k in props]
    order = first + [k for k in props if k not in first]
    return schema | {"parameters": parameters | {"properties": {k: props[k] for k in order}}}


def _checked(
    call: ToolCall | None, own: Toolset | None, newest: Toolset | None
) -> tuple[ToolCall | None, str | None]:
    """The call validated against its own turn's tools, then the newest; or why not."""
    if call is None:
        return None, "answer"  # an answer in words: the log keeps no text to learn from
    if own is None or newest is None:
        return None, "no_schemas"
    try:
        call = _validated(own, call)
    except ToolError:
        return None, "invalid_call"
    if newest is own:
        return call, None
    try:
        return _validated(newest, call), None
    except ToolError:
        return None, "stale_toolset"


def _validated(toolset: Toolset, call: ToolCall) -> ToolCall:
    arguments = toolset.get(call.name).validate(call.arguments)
    return call.model_copy(update={"arguments": arguments})


def _as_record(row: LabeledTurn, call: ToolCall | None, skill: str) -> Record:
    return Record(id=row.id, request=row.request, context=row.context, call=call,
                  route="escalated" if row.teacher else "local", skill=skill)  # fmt: skip


def _why_unlabeled(interaction: Interaction) -> str:
    return drop_reason(record_from_interaction(interaction)) or "unlabeled"


def _distinct(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v is not None))


def _count(dropped: dict[str, int], reason: str) -> None:
    dropped[reason] = dropped.get(reason, 0) + 1
