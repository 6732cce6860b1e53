"""Per skill and per day, from the device's log: how many turns, the share served locally,
how often the small model agreed with the teacher where the teacher answered, why turns went
to the teacher, and what the teacher cost. `edge-agent route report` prints and draws it.

Two ways the teacher's call meets the small model's, both scored with the skill's scorer:

    local turn ──(remote down, queued)──► late label (``label_of``)   → local accuracy
    confident local turn ──(drawn: audit)──► late label               → audit agreement too
    escalated turn (the SLM's attempt kept beside the teacher's call) → shadow agreement

A teacher-first skill starts at 0 % local with only shadow agreement to show; after its
adapter is promoted the local share rises and the audits (a random share of the confident
turns, ``routing.audit``) and late labels keep measuring it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.skills.skill import Scorer, exact_call
from edge_agent.types import Interaction, ToolCall

if TYPE_CHECKING:
    from edge_agent.settings import Settings

ScorerFor = Callable[[str], Scorer]
NO_SKILL = "unknown"  # turns logged before skills were recorded
_NUMBER = re.compile(r"\s*[-+]?\d.*$")


@dataclass
class DayStats:
    """One skill's turns on one day (or in total)."""

    turns: int = 0
    local: int = 0  # served on the device: local, or local_fallback with the remote down
    escalated: int = 0
    queued: int = 0  # local turns still waiting for a teacher label (best efforts, audits)
    labelled: int = 0  # local turns the teacher labelled later
    local_right: int = 0  # … whose local call was the teacher's
    audited: int = 0  # confident local turns drawn for an audit that the teacher labelled
    audit_agree: int = 0  # … whose local call was the teacher's
    shadowed: int = 0  # escalated turns with the small model's own attempt kept
    shadow_agree: int = 0  # … where that attempt was the teacher's call
    labels: int = 0  # late label records written this day
    teacher_bytes: int = 0  # request bodies sent to the teacher, labels included
    reasons: Counter[str] = field(default_factory=Counter)  # why the router wanted the teacher

    def add(self, other: DayStats) -> None:
        for name in self.__dataclass_fields__:
            if name != "reasons":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "turns": self.turns, "local": self.local, "escalated": self.escalated,
            "local_share": _share(self.local, self.turns), "queued": self.queued,
            "labelled": self.labelled, "local_accuracy": _share(self.local_right, self.labelled),
            "audited": self.audited, "audit_agreement": _share(self.audit_agree, self.audited),
            "shadowed": self.shadowed,
            "shadow_agreement": _share(self.shadow_agree, self.shadowed),
            "labels": self.labels, "teacher_bytes": self.teacher_bytes,
            "reasons": dict(self.reasons.most_common()),
        }  # fmt: skip


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def skill_report(
    items: Iterable[Interaction],
    *,
    scorer_for: ScorerFor = lambda _skill: exact_call,
    skill: str | None = None,
) -> dict[str, Any]:
    """``{skill: {"days": [{"day": "YYYY-MM-DD", …}], "total": {…}}}`` over `items` (log
    records, oldest first); `skill`: only that one. Days are local calendar days."""
    items = list(items)
    labels = {i.result.label_of: i for i in items if i.result.label_of}
    days: dict[str, dict[str, DayStats]] = defaultdict(lambda: defaultdict(DayStats))
    scorers: dict[str, Scorer] = {}
    for item in items:
        name = item.result.skill or NO_SKILL
        if skill is not None and name != skill:
            continue
        stats = days[name][day_of(item.recorded_at)]
        if name not in scorers:
            scorers[name] = scorer_for(name)
        count(stats, item, labels.get(item.id), scorers[name])
    return {name: _skill_summary(by_day) for name, by_day in sorted(days.items())}


def _skill_summary(by_day: Mapping[str, DayStats]) -> dict[str, Any]:
    total = DayStats()
    for stats in by_day.values():
        total.add(stats)
    rows = [{"day": day} | by_day[day].as_dict() for day in sorted(by_day)]
    return {"days": rows, "total": total.as_dict()}


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts).date().isoformat()


def count(stats: DayStats, item: Interaction, label: Interaction | None, score: Scorer) -> None:
    """Add one record to its day: a late label counts as teacher cost only."""
    result, routing = item.result, item.result.routing
    if routing is not None:
        stats.teacher_bytes += routing.remote_bytes
    if result.label_of:
        stats.labels += 1
        return
    stats.turns += 1
    if routing is not None and routing.decision == "remote":
        stats.reasons[reason_kind(routing.reason)] += 1
    if result.route == "escalated":
        stats.escalated += 1
        if routing is not None and routing.local_attempt is not None:
            stats.shadowed += 1
            stats.shadow_agree += score(routing.local_attempt.call, item.teacher_label)
        return
    stats.local += 1
    if label is not None:
        right = score(_first_call(item), label.teacher_label)
        stats.labelled += 1
        stats.local_right += right
        if routing is not None and routing.audit_share is not None:
            stats.audited += 1
            stats.audit_agree += right
    elif routing is not None and routing.queued:
        stats.queued += 1


def _first_call(item: Interaction) -> ToolCall | None:
    calls = item.result.tool_calls
    return calls[0].call if calls else None


def reason_kind(reason: str) -> str:
    """A reason without its particulars, so reasons count up: "min log-prob -2.1 < -1.0" →
    "min log-prob", "teacher-first: no promoted adapter for x" → "teacher-first"."""
    head = reason.split(":", 1)[0]
    return _NUMBER.sub("", head).strip() or reason


def skill_scorers(settings: Settings) -> ScorerFor:
    """Each skill's own scorer as this device defines the skill; the exact call for one it
    cannot find (a client's tools, an uninstalled package)."""
    from edge_agent.skills.registry import get_skill

    def scorer_for(name: str) -> Scorer:
        try:
            return get_skill(name, settings).score
        except EdgeAgentError:
            return exact_call

    return scorer_for


# --- the picture ------------------------------------------------------------------------------


def plot_report(path: Path, report: Mapping[str, Any], *, title: str = "routing by skill") -> Path:
    """Three panels over days, one line per skill: the share served locally, the small
    model's agreement with the teacher (local accuracy solid, shadow agreement dashed), and
    the kilobytes sent to the teacher. Needs matplotlib (the host extra)."""
    plt = pyplot()
    days = sorted({row["day"] for s in report.values() for row in s["days"]})
    x = {day: i for i, day in enumerate(days)}
    fig, (share, agree, cost) = plt.subplots(3, 1, sharex=True, figsize=(7.2, 7.0))
    for name, summary in report.items():
        rows = summary["days"]
        line = _plot(share, x, rows, "local_share", label=name, style="-")
        color = line.get_color() if line is not None else None
        _plot(agree, x, rows, "local_accuracy", label=f"{name} local", style="-", color=color)
        _plot(agree, x, rows, "shadow_agreement", label=f"{name} shadow", style="--",
              color=color)  # fmt: skip
        kb = [row["teacher_bytes"] / 1000 for row in rows]
        cost.plot([x[row["day"]] for row in rows], kb, marker="o", color=color, label=name)
    _style(share, "share served locally", percent=True)
    _style(agree, "agrees with the teacher", percent=True)
    _style(cost, "kB sent to the teacher")
    cost.set_xticks(range(len(days)), days, rotation=30, ha="right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot(
    ax: Any, x: Mapping[str, int], rows: list[dict[str, Any]], key: str, *, label: str,
    style: str, color: str | None = None,
) -> Any:  # fmt: skip
    points = [(x[row["day"]], row[key]) for row in rows if row[key] is not None]
    if not points:
        return None
    xs, ys = zip(*points, strict=True)
    return ax.plot(xs, ys, style, marker="o", color=color, label=label)[0]


def _style(ax: Any, ylabel: str, *, percent: bool = False) -> None:
    ax.set_ylabel(ylabel, fontsize=9)
    if percent:
        ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display), or one line on what to do."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError(
            "a PNG needs matplotlib, which this device lacks: use --json, or "
            "pip install 'edge-agent[host]'"
        ) from exc
    return plt
