"""The gate: a candidate adapter is promoted only if, run through llama.cpp as the devices run
it, it beats the current adapter (or the bare base model) on the held-out eval set.

Promotion needs the skill's exact-match accuracy (by the skill's own scorer) to rise by at
least `margin` and its right-tool accuracy not to fall. Each skill is gated alone, on its own
held-out rows: any report with the `GateReport` shape will do (`host.evaluate.ScoreReport` for
any skill; the home skill's HA-row `Report`). Intents (tools) that got worse are listed in
the report either way, so a reviewer sees what a gain cost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge_agent.skills.home.dataset import Row
from edge_agent.skills.home.evaluate import Evaluation, evaluate

CANDIDATE = "candidate"
INCUMBENT = "incumbent"


class _Counts(Protocol):
    @property
    def n(self) -> int: ...
    @property
    def exact(self) -> int: ...


class GateReport(Protocol):
    """What the gate reads of an evaluation: overall accuracies and per-intent counts."""

    @property
    def n(self) -> int: ...
    @property
    def function_accuracy(self) -> float: ...
    @property
    def exact_match(self) -> float: ...
    @property
    def per_intent(self) -> Mapping[str, _Counts]: ...


@dataclass
class Decision:
    promote: bool
    reason: str
    candidate: dict[str, float]
    incumbent: dict[str, float]
    regressed_intents: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def skill_summary(report: GateReport) -> dict[str, float]:
    return {"n": report.n, "right_tool": report.function_accuracy, "exact": report.exact_match}


def intent_exact(report: GateReport) -> dict[str, float]:
    return {k: v.exact / v.n for k, v in report.per_intent.items() if v.n}


def decide(
    candidate: Mapping[str, GateReport],
    incumbent: Mapping[str, GateReport],
    *,
    margin: float = 0.02,
) -> Decision:
    """Per skill: the candidate's reports against the incumbent's on the same rows. The first
    skill is the one trained; any further one must merely not regress."""
    skill = next(iter(candidate))
    new, old = candidate[skill], incumbent[skill]
    regressed = {
        intent: (old_exact, intent_exact(new).get(intent, 0.0))
        for intent, old_exact in intent_exact(old).items()
        if intent_exact(new).get(intent, 0.0) < old_exact
    }
    decision = Decision(False, "", skill_summary(new), skill_summary(old), regressed)
    worse = [s for s in candidate if s in incumbent and _regresses(candidate[s], incumbent[s])]
    if worse:
        decision.reason = f"regresses skill(s) {', '.join(sorted(worse))}"
    elif new.exact_match < old.exact_match + margin:
        gain = new.exact_match - old.exact_match
        decision.reason = f"exact match {gain:+.1%} is under the {margin:.0%} margin"
    else:
        decision.promote = True
        decision.reason = f"exact match {old.exact_match:.1%} -> {new.exact_match:.1%}"
    return decision


def _regresses(new: GateReport, old: GateReport) -> bool:
    return new.exact_match < old.exact_match or new.function_accuracy < old.function_accuracy


def evaluate_adapter(
    model_path: str | Path,
    rows: Sequence[Row],
    adapter: Path | None,
    *,
    threads: int = 2,
    n_ctx: int = 4096,
) -> Evaluation:
    """The device's runtime: llama.cpp, the GGUF base, the exported adapter (or none)."""
    from edge_agent.backends.llama_cpp import LlamaCppBackend

    with LlamaCppBackend(model_path, n_ctx=n_ctx, n_threads=threads) as backend:
        name = None
        if adapter is not None:
            name = CANDIDATE
            backend.load_adapter(name, adapter)
            backend.use_adapter(name)  # the agent only picks the prompt; the backend applies it
        return evaluate(backend, rows, adapter=name)


def write_report(
    out_dir: Path, decision: Decision, candidate: GateReport, incumbent: GateReport, **extra: Any
) -> Path:
    """gate.json (the decision, both summaries, per-intent before/after) and gate.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    per_intent = {
        intent: {"before": intent_exact(incumbent).get(intent, 0.0), "after": exact, "n": n}
        for intent, (exact, n) in _with_counts(candidate).items()
    }
    data = decision.to_dict() | {"per_intent": per_intent} | extra
    path = out_dir / "gate.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    plot(per_intent, out_dir / "gate.png", title=decision.reason)
    return path


def _with_counts(report: GateReport) -> dict[str, tuple[float, int]]:
    return {k: (v.exact / v.n if v.n else 0.0, v.n) for k, v in report.per_intent.items()}


def plot(per_intent: dict[str, dict[str, float]], path: Path, *, title: str = "") -> Path:
    """Exact-match accuracy before and after, one pair of bars per intent."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a host
    import matplotlib.pyplot as plt

    names = sorted(per_intent)
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names)), 4.5))
    ax.bar([x - 0.2 for x in xs], [per_intent[n]["before"] for n in names], 0.4, label="before")
    ax.bar([x + 0.2 for x in xs], [per_intent[n]["after"] for n in names], 0.4, label="after")
    ax.set_xticks(list(xs), [n.removeprefix("Hass") for n in names], rotation=75, fontsize=7)
    ax.set_ylabel("exact call match")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
