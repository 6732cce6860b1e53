"""The per-skill flywheel: which skills the store can train, each one's data and task, and the
adapter its gate must beat.

`plan_skills` reads the store once, groups its turns by skill, and for each skill builds its
rows (`skill_data`), its split (by request; the eval part is held-out teacher labels) and its
`SkillTask` (the newest logged tools, the skill's scorer) — or says why it cannot be trained
yet. A turn of one skill never enters another's plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import FlywheelError
from edge_agent.host.curate import Curated, curate_against, held_out_split
from edge_agent.host.pipeline import SkillTask
from edge_agent.host.skill_data import (
    SchemaStore,
    SkillData,
    StoredTurn,
    curate_skill,
    skill_data,
    turns_by_skill,
)
from edge_agent.settings import Settings

if TYPE_CHECKING:
    from edge_agent.adapters.release import AdapterRelease
    from edge_agent.host.publish import AdapterRepository

__all__ = [
    "MIN_TRAIN",
    "DataSnapshot",
    "SkillPlan",
    "incumbent_for",
    "new_data_since",
    "plan_skill",
    "plan_skills",
]

MIN_TRAIN = 10  # `--all` skips a skill with fewer training rows than this


@dataclass(frozen=True)
class DataSnapshot:
    """What a skill's labelled rows were when it was planned: how many, and when the newest
    was recorded. A release keeps its training data's (``gate["data_snapshot"]``), so
    `--all` can tell whether a skill has new data since then (`new_data_since`)."""

    rows: int = 0
    newest: float = 0.0  # recorded_at of the newest labelled row (0: none)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "newest": self.newest}

    @classmethod
    def of(cls, data: SkillData, turns: Sequence[StoredTurn]) -> DataSnapshot:
        labelled = {r.id for r in data.records}
        times = [t.recorded_at for t in turns if t.interaction.id in labelled]
        return cls(len(data.records), max(times, default=0.0))


@dataclass
class SkillPlan:
    name: str
    data: SkillData
    snapshot: DataSnapshot = field(default_factory=DataSnapshot)
    curated: Curated | None = None  # None: no tools to write its examples against
    task: SkillTask | None = None
    skipped: str | None = None  # why it cannot be trained now (None: it can)
    unreadable: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "skill": self.name, "turns": self.data.turns, "toolset": self.data.fingerprint,
            "data": self.curated.summary() if self.curated else {"dropped": self.data.dropped},
            "skipped": self.skipped,
        }  # fmt: skip


def plan_skills(
    store: SchemaStore,
    names: Sequence[str] | None = None,
    *,
    settings: Settings | None = None,
    eval_on: str = "curated",
    min_train: int = MIN_TRAIN,
) -> list[SkillPlan]:
    """A plan per skill in the store (or per name in `names`, in that order)."""
    unreadable: dict[str, int] = {}
    grouped = turns_by_skill(store, unreadable)
    missing = [n for n in names or () if n not in grouped]
    if missing:
        known = ", ".join(sorted(grouped)) or "none"
        raise FlywheelError(f"no records of skill {missing[0]!r} in the store; skills: {known}")
    settings = settings or Settings()
    plans = [
        _plan(name, grouped[name], store, settings, eval_on=eval_on, min_train=min_train)
        for name in (names or sorted(grouped))
    ]
    for plan in plans:
        plan.unreadable = unreadable
        if plan.curated is not None:  # reported with the other drops (`host train` prints them)
            plan.curated.dropped |= unreadable
    return plans


def plan_skill(
    store: SchemaStore,
    name: str,
    *,
    settings: Settings | None = None,
    eval_on: str = "curated",
    min_train: int = 1,
) -> SkillPlan:
    (plan,) = plan_skills(store, [name], settings=settings, eval_on=eval_on, min_train=min_train)
    return plan


def _plan(
    name: str,
    turns: Sequence[StoredTurn],
    store: SchemaStore,
    settings: Settings,
    *,
    eval_on: str,
    min_train: int,
) -> SkillPlan:
    data = skill_data(name, turns, store, settings)
    plan = SkillPlan(name, data, DataSnapshot.of(data, turns))
    if data.toolset is None:
        plan.skipped = "no tool schemas: its turns logged none and this host does not know it"
        return plan
    if eval_on == "split":  # the home skill's committed HA test split is the eval part
        curated = curate_against(data.records, held_out_split())
        for reason, n in data.dropped.items():
            curated.dropped[reason] = curated.dropped.get(reason, 0) + n
    else:
        curated = curate_skill(data)
    plan.curated = curated
    plan.task = SkillTask(name, data.toolset, data.scorer, data.fingerprint)
    plan.skipped = _too_little(curated, min_train)
    return plan


def _too_little(curated: Curated, min_train: int) -> str | None:
    train, held_out = len(curated.train), len(curated.eval)
    if train < max(1, min_train):
        return f"{train} training rows (needs {max(1, min_train)}); dropped {curated.dropped}"
    if not held_out:
        return "no held-out teacher labels to gate on: escalate more of its turns"
    return None


def incumbent_for(
    repository: AdapterRepository | None, skill: str, model_path: Path
) -> tuple[Path | None, str | None]:
    """The adapter the gate must beat: the skill's latest release for this base model (its
    file, its name), or (None, None) for the bare base model."""
    from edge_agent.models.gguf import identity_of, read_header

    release = repository.latest(skill) if repository is not None else None
    if repository is None or release is None:
        return None, None
    if release.base_identity != identity_of(read_header(model_path)).as_dict():
        return None, None  # trained for another base: the bare base is this one's incumbent
    return repository.adapter_file(release), release.name


def new_data_since(plan: SkillPlan, release: AdapterRelease | None) -> bool:
    """Whether `plan` holds labelled rows its skill's `release` was not trained on: more rows,
    or a newer one, than the release's data snapshot. A release without one (published
    before snapshots were kept) or no release at all: yes. Rows removed since (`host
    forget`, retention) alone are no new data."""
    old = (release.gate.get("data_snapshot") if release is not None else None) or None
    if not isinstance(old, dict):
        return True
    then = DataSnapshot(int(old.get("rows", 0)), float(old.get("newest", 0.0)))
    return plan.snapshot.rows > then.rows or plan.snapshot.newest > then.newest
