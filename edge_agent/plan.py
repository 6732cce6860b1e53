"""The fit plan: which model, quantization and context this device runs, and why.

A dry run: nothing is loaded. ``make_plan`` takes the detected (or named) device profile,
the catalog and what is on disk, and either returns a plan whose estimated RAM fits the
profile's memory budget or raises ``ModelDoesNotFitError`` naming what would fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.catalog import Architecture, Catalog, CatalogEntry, Source
from edge_agent.errors import ModelDoesNotFitError
from edge_agent.profile import DetectedDevice, DeviceProfile, detect, load_profile, read_facts
from edge_agent.settings import Settings
from edge_agent.store import ModelStore

if TYPE_CHECKING:
    from edge_agent.modelfile import GGUFHeader

MIN_CONTEXT = 512


@dataclass
class Candidate:
    entry: CatalogEntry
    context_size: int
    ram_mb: float
    fits: bool
    available: bool


@dataclass
class FitPlan:
    device: DetectedDevice
    entry: CatalogEntry
    context_size: int
    threads: int
    budget_mb: int
    ram_mb: float
    reasons: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def profile(self) -> DeviceProfile:
        return self.device.profile

    def backend_options(self) -> dict[str, Any]:
        """Keyword arguments for the profile's backend."""
        p = self.profile
        return {
            "n_ctx": self.context_size,
            "n_threads": self.threads,
            "n_gpu_layers": p.gpu_layers,
            "flash_attn": p.flash_attention,
            "use_mmap": p.use_mmap,
            "use_mlock": p.use_mlock,
            "kv_cache_type": p.kv_cache_type,
        }

    def to_dict(self) -> dict[str, Any]:
        f = self.device.facts
        return {
            "profile": self.profile.name,
            "detected_because": self.device.reason,
            "machine": {
                "cpu": f.cpu_model,
                "arch": f.arch,
                "physical_cores": f.physical_cores,
                "total_ram_mb": f.total_ram_mb,
                "usable_ram_mb": f.usable_ram_mb,
            },
            "model": self.entry.name,
            "base_model": self.entry.base_model,
            "quantization": self.entry.quantization,
            "backend": self.profile.backend,
            "execution_provider": self.profile.execution_provider,
            "context_size": self.context_size,
            "threads": self.threads,
            "gpu_layers": self.profile.gpu_layers,
            "kv_cache_type": self.profile.kv_cache_type,
            "estimated_ram_mb": round(self.ram_mb),
            "budget_mb": self.budget_mb,
            "why": self.reasons,
        }


def resolve_device(settings: Settings) -> DetectedDevice:
    extra = (settings.profiles_dir,) if settings.profiles_dir else ()
    if settings.profile == "auto":
        return detect(extra_dirs=extra)
    profile = load_profile(settings.profile, extra_dirs=extra)
    return DetectedDevice(facts=read_facts(), profile=profile, reason="named by --profile")


def make_plan(
    settings: Settings,
    catalog: Catalog,
    store: ModelStore,
    device: DetectedDevice | None = None,
) -> FitPlan:
    device = device or resolve_device(settings)
    budget = device.profile.memory_budget_mb(device.facts)
    threads = settings.threads or device.profile.resolved_threads(device.facts)
    if settings.model:
        entry = _requested_entry(settings.model, catalog)
        cands = [_candidate(entry, settings, device.profile, budget, store, shrink=True)]
    else:
        cands = [
            _candidate(e, settings, device.profile, budget, store)
            for e in catalog.entries
            if e.instruct
        ]
    try:
        chosen, reasons = _choose(cands, settings, device.profile, budget)
    except ModelDoesNotFitError as exc:
        others = assess_catalog(settings, catalog, store, device)
        raise ModelDoesNotFitError(f"{exc}; {_would_fit(others)}") from None
    plan = FitPlan(device, chosen.entry, chosen.context_size, threads, budget, chosen.ram_mb)
    plan.reasons = [f"profile {device.profile.name}: {device.reason}", *reasons]
    plan.candidates = cands
    return plan


def assess_catalog(
    settings: Settings, catalog: Catalog, store: ModelStore, device: DetectedDevice
) -> list[Candidate]:
    """Every catalog entry with the context it would get here, its RAM and whether it fits."""
    budget = device.profile.memory_budget_mb(device.facts)
    return [_candidate(e, settings, device.profile, budget, store) for e in catalog.entries]


def _requested_entry(model: str, catalog: Catalog) -> CatalogEntry:
    if model in catalog:
        return catalog.get(model)
    return entry_from_gguf(Path(model).expanduser())


def entry_from_gguf(path: Path) -> CatalogEntry:
    """A catalog entry describing a GGUF the user pointed at, read from its header."""
    from edge_agent.modelfile import identity_of, read_header

    header = read_header(path)
    ident = identity_of(header)
    arch = Architecture(
        n_layer=ident.n_layer,
        n_embd=ident.n_embd,
        n_head=ident.n_head,
        n_head_kv=ident.n_head_kv,
        head_dim=ident.n_embd // ident.n_head,
        n_ff=ident.n_ff,
        n_vocab=ident.n_vocab,
        context_max=header.context_length or 2048,
    )
    return CatalogEntry(
        name=path.name,
        family=ident.architecture,
        base_model=ident.base_name,
        parameters=sum(math.prod(t.shape) for t in header.tensors),
        quantization=_dominant_type(header),
        file_size_mb=path.stat().st_size / (1024 * 1024),
        size_estimated=False,
        license="unknown",
        source=Source(kind="path", path=str(path)),
        arch=arch,
    )


def _dominant_type(header: GGUFHeader) -> str:
    """The quantization most of the file's bytes are stored in (what a user calls its quant)."""
    by_type: dict[str, int] = {}
    for t in header.tensors:
        by_type[t.type_name] = by_type.get(t.type_name, 0) + t.nbytes
    return max(by_type, key=lambda k: by_type[k]) if by_type else "unknown"


def _candidate(
    entry: CatalogEntry,
    settings: Settings,
    profile: DeviceProfile,
    budget: int,
    store: ModelStore,
    *,
    shrink: bool = False,
) -> Candidate:
    """The entry at the profile's context, or for a model the user asked for by name, at the
    largest context (halving) that fits; a context the user set explicitly is never shrunk."""
    wanted = min(settings.context_size or profile.context_size, entry.arch.context_max)
    floor = min(MIN_CONTEXT, wanted) if shrink and not settings.context_size else wanted
    ctx = wanted
    while True:
        ram = entry.ram_needed_mb(ctx, profile.kv_cache_type, profile.flash_attention)
        if ram <= budget or ctx // 2 < floor:
            break
        ctx //= 2
    available = entry.source.kind == "path" or store.is_available(entry)
    return Candidate(entry, ctx, ram, ram <= budget, available)


def _choose(
    cands: list[Candidate], settings: Settings, profile: DeviceProfile, budget: int
) -> tuple[Candidate, list[str]]:
    fitting = [c for c in cands if c.fits]
    if not fitting:
        raise ModelDoesNotFitError(_refusal(cands, budget))
    ready = [c for c in fitting if c.available] or fitting
    best = max(ready, key=lambda c: _rank(c, profile))
    reasons = [_why_model(best, fitting, settings, profile), _why_context(best, settings, profile)]
    reasons.append(
        f"estimated RAM {best.ram_mb:.0f} MB (weights {best.entry.file_size_mb:.0f} MB + "
        f"KV cache {best.entry.kv_cache_mb(best.context_size, profile.kv_cache_type):.0f} MB "
        f"+ buffers) within the budget of {budget} MB"
    )
    return best, reasons


def _rank(c: Candidate, profile: DeviceProfile) -> tuple[int, int]:
    """Bigger models first; among quantizations of one size, the profile's preference."""
    prefs = [q.upper() for q in profile.preferred_quantizations]
    quant = c.entry.quantization.upper()
    pref = len(prefs) - prefs.index(quant) if quant in prefs else 0
    return c.entry.parameters, pref


def _why_model(
    best: Candidate, fitting: list[Candidate], settings: Settings, profile: DeviceProfile
) -> str:
    if settings.model:
        return f"model {best.entry.name} requested explicitly"
    why = f"{best.entry.name}: the largest model that fits and is on this device"
    bigger = [c for c in fitting if c.entry.parameters > best.entry.parameters]
    if bigger:
        top = max(bigger, key=lambda c: _rank(c, profile))
        why += f" ({top.entry.name} would fit too: `edge-agent models pull {top.entry.name}`)"
    return why


def _why_context(best: Candidate, settings: Settings, profile: DeviceProfile) -> str:
    wanted = settings.context_size or profile.context_size
    if best.context_size < wanted:
        return f"context {best.context_size} (reduced from {wanted} to fit memory/model limit)"
    source = "--context-size" if settings.context_size else f"profile {profile.name}"
    return f"context {best.context_size} from {source}"


def _refusal(cands: list[Candidate], budget: int) -> str:
    need = min(cands, key=lambda c: c.ram_mb)
    what = need.entry.name if len(cands) == 1 else "no catalog model"
    return (
        f"{what} does not fit: ~{need.ram_mb:.0f} MB needed at context {need.context_size}, "
        f"this device's budget is {budget} MB"
    )


def _would_fit(cands: list[Candidate]) -> str:
    fitting = sorted((c for c in cands if c.fits), key=lambda c: -c.entry.parameters)
    if not fitting:
        return "nothing in the catalog fits; free memory or raise the profile's budget"
    listed = ", ".join(f"{c.entry.name} (ctx {c.context_size})" for c in fitting[:3])
    return f"these would fit: {listed}"
