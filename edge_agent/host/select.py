"""Paper step 4: per skill, the catalog model to fine-tune for a fleet of target devices.

An adapter only works on the base model it was trained on, so the model to train is the one
the target devices will *run*: for each target (a device profile and the RAM of its smallest
board) the catalog model the device's own fit plan would choose, at the context the skill
needs. Every target choosing the same base gives one adapter; different bases mean one adapter
per base, and the selection says which target runs which.

Where bases were measured for the skill (`measured`: each base with its own adapter on the
skill's test split, edge_agent/data/base_models.json, written by scripts/bench/bench_bases.py),
a target instead gets the most accurate measured base that fits its memory and whose p50
latency per command, scaled to the target (the file's per-profile slowdown against the
measuring host), stays within the latency budget; bases within a point of exact match count
as equal and the faster one wins. If no measured base is fast enough, the fastest one.
Unmeasured bases are passed over when a measured one fits: no adapter exists for them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.errors import ModelDoesNotFitError
from edge_agent.models.catalog import Catalog, CatalogEntry
from edge_agent.models.profile import DeviceProfile

MIN_CONTEXT = 512
MEASURED = Path(__file__).resolve().parents[1] / "data" / "base_models.json"
LATENCY_BUDGET_MS = 1500.0  # p50 per command on the target: a spoken command's answer
TIE = 0.01  # exact-match difference treated as noise (1 point: ~2 rows of the test split)


@dataclass(frozen=True)
class Measured:
    """One base with its skill adapter, on the skill's test split (measuring host)."""

    model: str
    exact: float
    right_tool: float
    p50_ms: float
    slowdown: Mapping[str, float] = field(default_factory=dict)  # profile -> x host latency

    def p50_on(self, profile: str) -> float:
        return self.p50_ms * self.slowdown.get(profile, 1.0)


def load_measured(skill: str, path: Path = MEASURED) -> dict[str, Measured]:
    """The skill's measured bases by catalog name; none if the file or skill is absent."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    slowdown = data.get("slowdown", {})
    return {
        name: Measured(name, float(m["exact"]), float(m["right_tool"]), float(m["p50_ms"]),
                       slowdown)
        for name, m in data.get("skills", {}).get(skill, {}).items()
    }  # fmt: skip


def record_measurement(result: Mapping[str, Any], path: Path = MEASURED, *,
                       skill: str = "home") -> None:  # fmt: skip
    """Merge one bench_bases.py eval line (a base with its adapter) into the file."""
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    keep = ("exact", "right_tool", "slot_f1", "p50_ms", "p95_ms", "decode_tokens_per_s",
            "peak_rss_mb", "adapter_mb", "model_mb", "n", "threads")  # fmt: skip
    entry = {k: result[k] for k in keep if k in result}
    data.setdefault("skills", {}).setdefault(skill, {})[str(result["model"])] = entry
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Target:
    """A class of devices the adapter is for: a profile, and the RAM of its smallest board."""

    profile: DeviceProfile
    ram_mb: int

    @property
    def budget_mb(self) -> int:
        spare = self.ram_mb - self.profile.memory.reserve_mb
        return max(0, int(spare * self.profile.memory.fraction))


@dataclass
class Selection:
    skill: str
    context: int  # tokens the skill's prompts need
    bases: dict[str, list[str]] = field(default_factory=dict)  # catalog model -> its targets
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"skill": self.skill, "context": self.context, "bases": self.bases,
                "reasons": self.reasons}  # fmt: skip


def context_needed(lengths: Sequence[int], quantile: float = 0.99) -> int:
    """The context a skill needs: its prompts' (+ answers') length at `quantile`, rounded up
    to a power of two, at least 512."""
    if not lengths:
        return MIN_CONTEXT
    ordered = sorted(lengths)
    at = ordered[min(len(ordered) - 1, math.ceil(quantile * len(ordered)) - 1)]
    return max(MIN_CONTEXT, 2 ** math.ceil(math.log2(max(at, 1))))


def choose_for(
    target: Target, catalog: Catalog, context: int,
    measured: Mapping[str, Measured] | None = None,
) -> CatalogEntry:  # fmt: skip
    """What the target's fit plan will run: the largest instruction-tuned model that fits its
    memory at the profile's context (the profile's preferred quantization first), provided
    that context holds the skill's `context`; with `measured` bases, the best measured one
    (see the module doc)."""
    fitting = _fitting(target, catalog, context, measured or {})
    if measured and (known := [e for e in fitting if e.name in measured]):
        return _best_measured(known, measured, target.profile.name)
    prefs = [q.upper() for q in target.profile.preferred_quantizations]
    return max(fitting, key=lambda e: (e.parameters, _preference(e, prefs)))


def _best_measured(
    entries: list[CatalogEntry], measured: Mapping[str, Measured], profile: str
) -> CatalogEntry:
    """The most accurate within the latency budget (near-ties to the faster), else the
    fastest."""
    scores = {e.name: measured[e.name] for e in entries}
    fast = [e for e in entries if scores[e.name].p50_on(profile) <= LATENCY_BUDGET_MS]
    if not fast:
        return min(entries, key=lambda e: scores[e.name].p50_on(profile))
    top = max(scores[e.name].exact for e in fast)
    tied = [e for e in fast if scores[e.name].exact >= top - TIE]
    return min(tied, key=lambda e: scores[e.name].p50_on(profile))


def _fitting(
    target: Target, catalog: Catalog, context: int, measured: Mapping[str, Measured]
) -> list[CatalogEntry]:
    """Models that fit the target's memory at a context holding `context`: instruction-tuned
    ones, and measured bases (a measured base has its skill adapter)."""
    p = target.profile
    fitting = [
        e for e in catalog.entries
        if (e.instruct or e.name in measured) and _device_context(e, p) >= context
        and e.ram_needed_mb(_device_context(e, p), p.kv_cache_type, p.flash_attention)
        <= target.budget_mb
    ]  # fmt: skip
    if not fitting:
        raise ModelDoesNotFitError(
            f"no catalog model fits {p.name} with {target.ram_mb} MB and a context of "
            f"{context} tokens; target a larger board, or shorten the skill's prompts"
        )
    return fitting


def _device_context(entry: CatalogEntry, profile: DeviceProfile) -> int:
    return min(profile.context_size, entry.arch.context_max)  # as the device's plan sets it


def _preference(entry: CatalogEntry, prefs: list[str]) -> int:
    quant = entry.quantization.upper()
    return len(prefs) - prefs.index(quant) if quant in prefs else 0


def select_models(
    skill: str, targets: Sequence[Target], catalog: Catalog, context: int,
    measured: Mapping[str, Measured] | None = None,
) -> Selection:  # fmt: skip
    """Per target, the base its devices will run; the adapter is trained on each base."""
    selection = Selection(skill, context)
    for target in targets:
        entry = choose_for(target, catalog, context, measured)
        selection.bases.setdefault(entry.name, []).append(target.profile.name)
        ctx = _device_context(entry, target.profile)
        ram = entry.ram_needed_mb(ctx, target.profile.kv_cache_type, target.profile.flash_attention)
        fit = f"fits its {target.budget_mb} MB budget at its {ctx}-token context (~{ram:.0f} MB"
        selection.reasons.append(
            f"{target.profile.name} ({target.ram_mb} MB): {entry.name}, "
            + (_why_measured(entry.name, measured, target, catalog, context) + f"; {fit}"
               if measured and entry.name in measured else f"the largest that {fit}")
            + f"; the skill needs {context})"
        )  # fmt: skip
    return selection


def _why_measured(
    name: str, measured: Mapping[str, Measured], target: Target, catalog: Catalog, context: int
) -> str:
    m, profile = measured[name], target.profile.name
    fits = {e.name for e in _fitting(target, catalog, context, measured)}
    others = ", ".join(
        f"{o.model} {o.exact:.1%} at ~{o.p50_on(profile):.0f} ms"
        + ("" if o.model in fits else " (does not fit)")
        for o in measured.values() if o.model != name
    )  # fmt: skip
    return (
        f"measured {m.exact:.1%} exact at ~{m.p50_on(profile):.0f} ms p50 here (budget "
        f"{LATENCY_BUDGET_MS:.0f} ms)" + (f"; vs {others}" if others else "")
    )
