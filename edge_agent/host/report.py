"""What the host knows of each skill: records, teacher labels, shadow agreement, tool sets,
adapters and their gates, over time (`edge-agent host skills` and `host report`).

Shadow agreement is the share of escalated turns whose local attempt (the SLM's call, made in
shadow and never executed: ``routing.local_attempt``) the skill's scorer accepts against the
teacher's call: what the skill's adapter would have got right had it answered alone. A local
attempt that failed counts as a disagreement; turns without one are not counted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.host.curate import LEGACY_SKILL
from edge_agent.host.skill_data import SchemaStore, StoredTurn, known_skill, turns_by_skill
from edge_agent.settings import Settings
from edge_agent.skills.skill import Scorer, exact_call, labeled_turn
from edge_agent.types import Interaction

if TYPE_CHECKING:
    from edge_agent.adapters.release import AdapterRelease
    from edge_agent.host.publish import AdapterRepository

__all__ = ["DayCounts", "SkillStatus", "plot_report", "skill_statuses"]


@dataclass
class DayCounts:
    day: str  # UTC date the devices recorded the turns
    records: int = 0
    local: int = 0  # served by the device's own model
    teacher: int = 0  # teacher labels
    shadow: int = 0  # escalated turns with a local attempt beside the teacher's call
    agree: int = 0  # of those, the attempts the skill's scorer accepts

    def add(self, other: DayCounts) -> None:
        for name in ("records", "local", "teacher", "shadow", "agree"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class SkillStatus:
    skill: str
    totals: DayCounts
    toolsets: list[str]  # fingerprints its turns named, first seen first
    adapter: str | None = None  # the latest published release
    days: list[DayCounts] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)  # gate before/after each
    turns: list[dict[str, Any]] = field(default_factory=list)  # gate reports in run folders

    @property
    def agreement(self) -> float | None:
        t = self.totals
        return t.agree / t.shadow if t.shadow else None

    def to_dict(self) -> dict[str, Any]:
        t = self.totals
        return {
            "skill": self.skill, "records": t.records, "local": t.local,
            "teacher_labels": t.teacher, "shadow_attempts": t.shadow,
            "shadow_agreement": self.agreement, "toolsets": self.toolsets,
            "adapter": self.adapter, "days": [asdict(d) for d in self.days],
            "releases": self.releases, "turns": self.turns,
        }  # fmt: skip


def skill_statuses(
    store: SchemaStore,
    repository: AdapterRepository | None = None,
    *,
    settings: Settings | None = None,
    runs: Path | None = None,
) -> list[SkillStatus]:
    """One status per skill in the store (and per skill only the repository or `runs` name)."""
    settings = settings or Settings()
    grouped = turns_by_skill(store)
    releases = repository.releases() if repository is not None else []
    turns = _turn_reports(runs) if runs is not None else []
    names = sorted({*grouped, *(r.skill for r in releases), *(t["skill"] for t in turns)})
    out = []
    for name in names:
        status = _status(name, grouped.get(name, []), settings)
        mine = [r for r in releases if r.skill == name]
        status.adapter = mine[-1].name if mine else None
        status.releases = [_release_gate(r) for r in mine]
        status.turns = [t for t in turns if t["skill"] == name]
        out.append(status)
    return out


def _status(name: str, turns: Sequence[StoredTurn], settings: Settings) -> SkillStatus:
    skill = known_skill(name, settings)
    label = skill.label if skill else labeled_turn
    scorer = skill.scorer if skill else exact_call
    days: dict[str, DayCounts] = {}
    for turn in turns:
        day = datetime.fromtimestamp(turn.recorded_at, UTC).date().isoformat()
        days.setdefault(day, DayCounts(day)).add(_counts(turn.interaction, label, scorer))
    totals = DayCounts("all")
    for counts in days.values():
        totals.add(counts)
    fingerprints = list(dict.fromkeys(t.fingerprint for t in turns if t.fingerprint))
    return SkillStatus(name, totals, fingerprints, days=sorted(days.values(), key=lambda d: d.day))


def _counts(interaction: Interaction, label: Any, scorer: Scorer) -> DayCounts:
    result = interaction.result
    row = label(interaction)
    counts = DayCounts("", records=1, local=int(result.route != "escalated"),
                       teacher=int(row is not None and row.teacher))  # fmt: skip
    attempt = interaction.local_attempt
    if result.route == "escalated" and attempt is not None:
        counts.shadow = 1
        counts.agree = int(
            attempt.error is None and scorer(attempt.call, interaction.teacher_label)
        )
    return counts


def _release_gate(release: AdapterRelease) -> dict[str, Any]:
    gate = release.gate
    before, after = gate.get("incumbent") or {}, gate.get("candidate") or {}
    return {
        "name": release.name, "version": release.version, "n": after.get("n"),
        "before": before.get("exact"), "after": after.get("exact"),
        "right_tool_before": before.get("right_tool"), "right_tool_after": after.get("right_tool"),
        "reason": gate.get("reason"),
    }  # fmt: skip


def _turn_reports(runs: Path) -> list[dict[str, Any]]:
    """The gate reports (`gate.json`) under a folder of `host train` runs, oldest first."""
    found = []
    for path in sorted(runs.glob("**/gate.json"), key=lambda p: p.stat().st_mtime):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        turn = data.get("turn") or {}
        found.append({
            "skill": turn.get("skill") or LEGACY_SKILL, "path": str(path),
            "promote": data.get("promote"), "reason": data.get("reason"),
            "before": (data.get("incumbent") or {}).get("exact"),
            "after": (data.get("candidate") or {}).get("exact"),
        })  # fmt: skip
    return found


def plot_report(statuses: Sequence[SkillStatus], path: Path) -> Path:
    """Records per day, shadow agreement per day, and each release's gate before/after."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a host
    import matplotlib.dates
    import matplotlib.pyplot as plt

    fig, (records, agree, gates) = plt.subplots(3, 1, figsize=(8.0, 10.0))
    for i, status in enumerate(statuses):
        style = {"marker": "o", "label": status.skill, "color": f"C{i}"}  # one colour per skill
        days = [date.fromisoformat(d.day) for d in status.days]
        records.plot(days, [d.records for d in status.days], **style)
        shadow = [d for d in status.days if d.shadow]
        if shadow:
            days = [date.fromisoformat(d.day) for d in shadow]
            agree.plot(days, [d.agree / d.shadow for d in shadow], **style)
    records.set_ylim(bottom=0)
    span = len({d.day for s in statuses for d in s.days})
    for ax in (records, agree):  # whole days: one tick a day, at most ~10
        ax.xaxis.set_major_locator(matplotlib.dates.DayLocator(interval=max(1, span // 10)))
        ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%Y-%m-%d"))
    _style(records, "records per day", None)
    _style(agree, "shadow agreement with the teacher", (0.0, 1.0))
    _plot_gates(gates, [r for s in statuses for r in s.releases])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _style(ax: Any, title: str, ylim: tuple[float, float] | None) -> None:
    ax.set_title(title, fontsize=10)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)


def _plot_gates(ax: Any, releases: Sequence[dict[str, Any]]) -> None:
    xs = range(len(releases))
    ax.bar([x - 0.2 for x in xs], [r["before"] or 0.0 for r in releases], 0.4, label="before")
    ax.bar([x + 0.2 for x in xs], [r["after"] or 0.0 for r in releases], 0.4, label="after")
    ax.set_xticks(list(xs), [r["name"] for r in releases])
    ax.set_ylabel("exact calls (gate)")
    _style(ax, "gate of each published release: incumbent (before) vs release (after)", (0, 1))
