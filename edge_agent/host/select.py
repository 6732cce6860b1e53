"""Paper step 4: per skill, the catalog model to fine-tune for a fleet of target devices.

An adapter only works on the base model it was trained on, so the model to train is the one
the target devices will *run*: for each target (a device profile and the RAM of its smallest
board) the catalog model the device's own fit plan would choose, at the context the skill
needs. Every target choosing the same base gives one adapter; different bases mean one adapter
per base, and the selection says which target runs which.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from edge_agent.errors import ModelDoesNotFitError
from edge_agent.models.catalog import Catalog, CatalogEntry
from edge_agent.models.profile import DeviceProfile

MIN_CONTEXT = 512


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


def choose_for(target: Target, catalog: Catalog, context: int) -> CatalogEntry:
    """What the target's fit plan will run: the largest instruction-tuned model that fits its
    memory at the profile's context (the profile's preferred quantization first), provided
    that context holds the skill's `context`."""
    p = target.profile
    fitting = [
        e for e in catalog.entries
        if e.instruct and _device_context(e, p) >= context
        and e.ram_needed_mb(_device_context(e, p), p.kv_cache_type, p.flash_attention)
        <= target.budget_mb
    ]  # fmt: skip
    if not fitting:
        raise ModelDoesNotFitError(
            f"no catalog model fits {p.name} with {target.ram_mb} MB and a context of "
            f"{context} tokens; target a larger board, or shorten the skill's prompts"
        )
    prefs = [q.upper() for q in p.preferred_quantizations]
    return max(fitting, key=lambda e: (e.parameters, _preference(e, prefs)))


def _device_context(entry: CatalogEntry, profile: DeviceProfile) -> int:
    return min(profile.context_size, entry.arch.context_max)  # as the device's plan sets it


def _preference(entry: CatalogEntry, prefs: list[str]) -> int:
    quant = entry.quantization.upper()
    return len(prefs) - prefs.index(quant) if quant in prefs else 0


def select_models(
    skill: str, targets: Sequence[Target], catalog: Catalog, context: int
) -> Selection:
    """Per target, the base its devices will run; the adapter is trained on each base."""
    selection = Selection(skill, context)
    for target in targets:
        entry = choose_for(target, catalog, context)
        selection.bases.setdefault(entry.name, []).append(target.profile.name)
        ctx = _device_context(entry, target.profile)
        ram = entry.ram_needed_mb(ctx, target.profile.kv_cache_type, target.profile.flash_attention)
        selection.reasons.append(
            f"{target.profile.name} ({target.ram_mb} MB): {entry.name}, the largest that fits "
            f"its {target.budget_mb} MB budget at its {ctx}-token context (~{ram:.0f} MB; "
            f"the skill needs {context})"
        )
    return selection
