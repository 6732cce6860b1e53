"""Calibrating and measuring the router: signals on labelled rows, the thresholds that meet a
target accuracy, the accuracy / local-share curve, and a summary of routed turns in the log.

Each skill is calibrated on its own rows: its calibration set where it has one (home: the HA
validation split; the test split stays unseen so the benchmark that reports on it measures
thresholds picked elsewhere), or, for any skill, the device's own log: escalated turns that
carry the local model's shadow attempt and its signals beside the teacher's call, the attempt
right when the skill's scorer says it matches the teacher (`log_pairs`), and the audited
local turns' labels (``routing.audit``): those stand for the confident turns not drawn, so
each weighs 1/share (escalated pairs, all of them logged, weigh 1). A grid over each
signal's observed values (midpoints between them) is searched exhaustively: on a few hundred
rows that is milliseconds, and it is exact where a greedy or 1-D search is not. The distance
signal joins the search when the records carry it (`collect` with a router that has the
adapter's clusters: `Runtime.clusters_for`).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.agent import Agent, AgentConfig
from edge_agent.backends.base import Backend
from edge_agent.errors import ConfigError
from edge_agent.routing.router import Calibration, Router, Signal, SignalRecord, Thresholds
from edge_agent.skills.skill import exact_call
from edge_agent.types import AgentResult, Interaction, LocalAttempt, RouteSignals, ToolCall

if TYPE_CHECKING:
    from edge_agent.skills.skill import CalibrationRow, Scorer

_MAX_CANDIDATES = 48  # thresholds tried per signal: the search is a grid over them


def collect(
    backend: Backend,
    rows: Iterable[CalibrationRow],
    *,
    adapter: str | None,
    model_name: str | None = None,
    router: Router | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SignalRecord]:
    """The local attempt on each row of a skill's calibration set, as the runtime makes it
    (an adapted toolset: one call per turn, one repair), its signals and whether its call is
    right. Nothing is executed. Pass calibration rows only, never a test split."""
    router = router or Router(None)
    config = AgentConfig(stop_after_call=adapter is not None)
    records = []
    for i, row in enumerate(rows):
        agent = Agent(backend, row.tools(), config=config, adapter=adapter, model_name=model_name)
        attempt = router.attempt(agent.turn(row.request, area=row.area))
        records.append(
            SignalRecord(
                id=row.id,
                tool=attempt.call.name if attempt.call else None,
                signals=attempt.signals,
                correct=row.right(attempt.call),
                latency_ms=attempt.local.latency_ms,
            )  # fmt: skip
        )
        if progress:
            progress(i + 1)
    return records


@dataclass
class LogPairs:
    """A skill's teacher-labelled shadow attempts in the log, as calibration records."""

    records: list[SignalRecord] = field(default_factory=list)
    audited: int = 0  # of the records: confident local turns the teacher labelled (audits)
    other_attempts: int = 0  # made by another model or adapter than the one calibrated
    unusable: int = 0  # escalated, but the teacher's answer never became the turn's

    @property
    def used(self) -> int:
        return len(self.records)

    @property
    def skipped(self) -> int:
        return self.other_attempts + self.unusable


def log_pairs(
    items: Iterable[Interaction],
    skill: str,
    scorer: Scorer,
    *,
    model: str,
    adapter: str | None,
) -> LogPairs:
    """The escalated turns of `skill` and the audit labels of its confident local turns,
    whose local attempt `model` + `adapter` made (the signals of another adapter say nothing
    of this one's), each with its signals, its weight and whether the attempt was right:
    `scorer` (the skill's) against the teacher's call, or its answer in words (no call). A
    late label of a turn served while the remote was down carries no signals: unusable."""
    pairs = LogPairs()
    for item in items:
        result, routing = item.result, item.result.routing
        if result.skill != skill or result.route != "escalated" or routing is None:
            continue
        attempt, audit = routing.local_attempt, routing.audit_share
        if attempt is None:
            continue
        if (result.label_of and not audit) or result.outcome in ("failed", "timeout"):
            pairs.unusable += 1
        elif (attempt.model, attempt.adapter) != (model, adapter):
            pairs.other_attempts += 1
        else:
            pairs.records.append(_pair(result, attempt, scorer, 1 / audit if audit else 1.0))
            pairs.audited += bool(audit)
    return pairs


def _pair(
    result: AgentResult, attempt: LocalAttempt, scorer: Scorer, weight: float
) -> SignalRecord:
    teacher = result.tool_calls[0].call if result.tool_calls else None
    return SignalRecord(
        id=result.id, tool=attempt.call.name if attempt.call else None,
        signals=result.routing.signals if result.routing else RouteSignals(),
        correct=scorer(attempt.call, teacher), latency_ms=attempt.latency_ms, weight=weight,
    )  # fmt: skip


class _Features:
    """Signals of many records as arrays: missing log-probs never escalate (+inf), missing
    distances never escalate (-inf)."""

    def __init__(self, records: Sequence[SignalRecord]) -> None:
        def column(get: Callable[[RouteSignals], float | None], missing: float) -> np.ndarray:
            values = [get(r.signals) for r in records]
            return np.array([missing if v is None else v for v in values], dtype=np.float64)

        self.min = column(lambda s: s.min_logprob, np.inf)
        self.mean = column(lambda s: s.mean_logprob, np.inf)
        self.distance = column(lambda s: s.distance, -np.inf)
        self.repaired = np.array([r.signals.repaired for r in records], dtype=bool)
        self.ungrounded = np.array([r.signals.ungrounded for r in records], dtype=bool)
        self.invalid = np.array([r.signals.invalid for r in records], dtype=bool)
        self.correct = np.array([r.correct for r in records], dtype=bool)
        self.weight = np.array([r.weight for r in records], dtype=np.float64)


def candidates(values: np.ndarray, *, above: bool = False) -> list[float | None]:
    """Thresholds worth trying for one signal: unused (None), then midpoints between its
    observed values, then one past the extreme that escalates everything with a value (past
    the largest for a lower bound, below the smallest for an upper bound, ``above``)."""
    finite = np.unique(values[np.isfinite(values)])
    if finite.size == 0:
        return [None]
    mids = list((finite[1:] + finite[:-1]) / 2)
    cuts = [float(finite[0]) - 1.0, *mids] if above else [*mids, float(finite[-1]) + 1.0]
    if len(cuts) > _MAX_CANDIDATES:  # evenly spaced by rank: the grid stays small
        picks = np.linspace(0, len(cuts) - 1, _MAX_CANDIDATES).round().astype(int)
        cuts = [cuts[i] for i in sorted(set(picks))]
    return [None, *(float(c) for c in cuts)]


def _mask(values: np.ndarray, threshold: float | None, *, above: bool = False) -> np.ndarray:
    if threshold is None:
        return np.zeros(values.shape, dtype=bool)
    return values > threshold if above else values < threshold


def outcome(
    records: Sequence[SignalRecord], thresholds: Thresholds, remote_accuracy: float = 1.0
) -> dict[str, float]:
    """What `thresholds` do on `records`: share served locally, overall accuracy (escalated
    requests right with `remote_accuracy`), accuracy of the local ones, counts."""
    f = _Features(records)
    esc = f.invalid | _mask(f.min, thresholds.min_logprob) | _mask(f.mean, thresholds.mean_logprob)
    esc |= _mask(f.distance, thresholds.max_distance, above=True)
    if thresholds.escalate_repaired:
        esc |= f.repaired
    if thresholds.escalate_ungrounded:
        esc |= f.ungrounded
    return _stats(f.correct, esc, remote_accuracy, f.weight)


def _stats(
    correct: np.ndarray, escalated: np.ndarray, remote_accuracy: float, weight: np.ndarray
) -> dict[str, float]:
    """Shares and accuracies weighted by what each record stands for; counts are records."""
    n = float(weight.sum()) or 1.0
    local = ~escalated
    right_local = float(weight[correct & local].sum())
    right = right_local + remote_accuracy * float(weight[escalated].sum())
    local_weight = float(weight[local].sum())
    return {
        "n": float(len(correct)),
        "local_share": local_weight / n,
        "accuracy": right / n,
        "local_accuracy": right_local / local_weight if local_weight else 0.0,
        "local_only_accuracy": float(weight[correct].sum()) / n,
        "escalated": float(escalated.sum()),
    }


def calibrate(
    records: Sequence[SignalRecord], target_accuracy: float, *, remote_accuracy: float = 1.0
) -> tuple[Thresholds, bool]:
    """The thresholds that serve the most requests locally while the overall accuracy stays
    at or above `target_accuracy` (ties: higher accuracy, then fewer signals used); and
    whether the target was reachable. Invalid attempts always escalate."""
    f = _Features(records)
    mins, means = candidates(f.min), candidates(f.mean)
    m_min = np.stack([_mask(f.min, t) for t in mins])  # (A, n)
    m_mean = np.stack([_mask(f.mean, t) for t in means])  # (B, n)
    best: tuple[tuple[float, float, int], Thresholds] | None = None
    combos = itertools.product(candidates(f.distance, above=True), (False, True), (False, True))
    for dist, repaired, made_up in combos:
        flags = (f.repaired & repaired) | (f.ungrounded & made_up)
        esc = f.invalid | _mask(f.distance, dist, above=True) | flags  # (n,)
        esc = esc | m_min[:, None, :] | m_mean[None, :, :]  # (A, B, n)
        key, (a, b) = _best_cell(f, esc, target_accuracy, remote_accuracy, (mins, means))
        key = (key[0], key[1], key[2] - int(dist is not None) - int(repaired) - int(made_up))
        if best is None or key > best[0]:
            chosen = Thresholds(
                min_logprob=mins[a], mean_logprob=means[b], max_distance=dist,
                escalate_repaired=repaired, escalate_ungrounded=made_up,
            )  # fmt: skip
            best = (key, chosen)
    assert best is not None
    return best[1], best[0][0] >= 0


def _best_cell(
    f: _Features,
    esc: np.ndarray,
    target: float,
    remote_accuracy: float,
    axes: tuple[list[float | None], list[float | None]],
) -> tuple[tuple[float, float, int], tuple[int, int]]:
    """The (min, mean) cell with the most local requests (weighted) at the target (-1 where
    the target is missed), then the best accuracy, then the fewest signals in use."""
    w = f.weight
    n = float(w.sum()) or 1.0
    acc = (((f.correct & ~esc) * w).sum(-1) + remote_accuracy * (esc * w).sum(-1)) / n
    score = np.where(acc >= target - 1e-12, (~esc * w).sum(-1), -1).astype(np.float64)
    used = np.add.outer([t is not None for t in axes[0]], [t is not None for t in axes[1]])
    order = np.lexsort((used.ravel(), -acc.ravel(), -score.ravel()))
    a, b = (int(i) for i in np.unravel_index(order[0], score.shape))
    return (float(score[a, b]), float(acc[a, b]), -int(used[a, b])), (a, b)


def signals_in(records: Sequence[SignalRecord]) -> list[Signal]:
    """The threshold signals at least one record has a value for, in a fixed order."""
    f = _Features(records)
    values: dict[Signal, np.ndarray] = {"min_logprob": f.min, "mean_logprob": f.mean,
                                        "distance": f.distance}  # fmt: skip
    return [name for name, v in values.items() if np.isfinite(v).any()]


def sweep(
    records: Sequence[SignalRecord], signal: Signal, remote_accuracy: float = 1.0
) -> list[dict[str, float]]:
    """The accuracy / local-share curve as one signal's threshold varies (failures always
    escalate): one point per candidate threshold, from all-local to all-escalated."""
    f = _Features(records)
    values = {"min_logprob": f.min, "mean_logprob": f.mean, "distance": f.distance}[signal]
    points = []
    above = signal == "distance"
    for t in candidates(values, above=above):
        esc = f.invalid | _mask(values, t, above=above)
        stats = _stats(f.correct, esc, remote_accuracy, f.weight)
        points.append({"threshold": float("nan") if t is None else t} | stats)
    return points


def calibration_for(
    records: Sequence[SignalRecord],
    target_accuracy: float,
    *,
    model: str,
    adapter: str | None,
    skill: str,
    split: str = "validation",
    remote_accuracy: float = 1.0,
) -> Calibration:
    """`calibrate` packaged with what it was picked on, ready to save as `skill`'s."""
    thresholds, met = calibrate(records, target_accuracy, remote_accuracy=remote_accuracy)
    return Calibration(
        model=model, adapter=adapter, toolset=skill, skill=skill, split=split,
        target_accuracy=target_accuracy, remote_accuracy=remote_accuracy, thresholds=thresholds,
        met=met, stats=outcome(records, thresholds, remote_accuracy), records=list(records),
    )  # fmt: skip


def plot_curves(
    path: Path,
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    points: Mapping[str, tuple[float, float]],
    *,
    title: str,
    target: tuple[float, float] | None = None,
) -> Path:
    """Overall accuracy against the share served locally: one line per curve, one marker
    per point, the target corner shaded. Needs matplotlib (the host extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError(
            "the routing plot needs matplotlib: pip install 'edge-agent[host]'"
        ) from exc
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, curve in curves.items():
        ordered = sorted(curve, key=lambda p: p["local_share"])
        ax.plot([p["local_share"] for p in ordered], [p["accuracy"] for p in ordered],
                marker=".", label=label)  # fmt: skip
    for label, (share, acc) in points.items():
        ax.scatter([share], [acc], s=80, zorder=5, marker="*", label=label)
    if target is not None:
        ax.axvspan(target[0], 1.0, ymin=0, ymax=1, alpha=0.06, color="green")
        ax.axhline(target[1], linestyle=":", color="green", label=f"target {target[1]:.0%}")
    ax.set_xlabel("share served locally")
    ax.set_ylabel("overall exact-call accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def dumps_curve(points: Sequence[Mapping[str, float]]) -> list[dict[str, Any]]:
    """Curve points for JSON (NaN, the "unused" threshold, becomes null)."""
    return [{k: (None if math.isnan(v) else round(v, 5)) for k, v in p.items()} for p in points]


# --- the log ---------------------------------------------------------------------------------

_ROUTES = ("local", "escalated", "local_fallback")


def log_summary(
    items: Iterable[Interaction], scorer_for: Callable[[str], Scorer] | None = None
) -> dict[str, Any]:
    """Routed turns in the log: how many each route served, how often the local attempt
    agreed with the teacher where one answered (the only labels a log holds; each skill's
    scorer from `scorer_for`, else the exact call), latency per route, thumbs-down per
    route, and what was sent to the remote."""
    routed = [(i.result, i.feedback) for i in items
              if i.result.routing is not None and not i.result.label_of]  # fmt: skip
    score = scorer_for or (lambda _skill: exact_call)
    agree = [
        score(r.skill or "")(_local_call(r), r.tool_calls[0].call)
        for r, _ in routed
        if r.route == "escalated" and r.tool_calls and r.routing and r.routing.local_attempt
    ]
    usage = [r.routing.remote_usage for r, _ in routed if r.routing and r.routing.remote_usage]
    n = len(routed)
    return {
        "turns": n,
        "routes": {k: sum(r.route == k for r, _ in routed) for k in _ROUTES},
        "local_share": sum(r.route != "escalated" for r, _ in routed) / n if n else None,
        "local_agrees_with_teacher": sum(agree) / len(agree) if agree else None,
        "latency_ms": {
            k: quantiles([r.latency_ms for r, _ in routed if r.route == k]) for k in _ROUTES
        },  # fmt: skip
        "thumbs_down": {
            k: sum(r.route == k and f is not None and f.rating == "down" for r, f in routed)
            for k in _ROUTES
        },  # fmt: skip
        "queued_for_teacher": sum(bool(r.routing and r.routing.queued) for r, _ in routed),
        "audited": sum(bool(r.routing and r.routing.audit_share) for r, _ in routed),
        "remote": {
            "prompt_tokens": sum(u.prompt_tokens for u in usage),
            "completion_tokens": sum(u.completion_tokens for u in usage),
            "bytes_sent": sum(r.routing.remote_bytes for r, _ in routed if r.routing),
            "errors": sum(bool(r.routing and r.routing.remote_error) for r, _ in routed),
        },
    }


def _local_call(result: AgentResult) -> ToolCall | None:
    attempt = result.routing.local_attempt if result.routing else None
    return attempt.call if attempt else None


def quantiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "p50": round(pick(0.5), 1), "p95": round(pick(0.95), 1),
            "mean": round(statistics.fmean(ordered), 1)}  # fmt: skip
