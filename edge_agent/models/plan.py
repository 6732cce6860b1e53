"""The fit plan: which model, quantization and context this device runs, and why.

A dry run: nothing is loaded. ``make_plan`` takes the detected (or named) device profile,
the catalog and what is on disk, and either returns a plan whose estimated RAM fits the
profile's memory budget or raises ``ModelDoesNotFitError`` naming what would fit.

What the model is stored as picks the backend: a GGUF file runs on llama.cpp, an ONNX model
folder on onnxruntime-genai. A profile's ``backend`` is a preference among models of one size,
not a veto: a GGUF on an onnx profile (every shipped catalog model is a GGUF) runs on
llama.cpp, and an ONNX folder on a llama_cpp profile on the onnx backend, each with a reason
in the plan saying so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edge_agent.errors import InvalidModelFileError, ModelDoesNotFitError, ModelNotFoundError
from edge_agent.models.catalog import MB, Architecture, Catalog, CatalogEntry, Source
from edge_agent.models.profile import (
    DetectedDevice,
    DeviceProfile,
    detect,
    load_profile,
    read_facts,
)
from edge_agent.models.store import GENAI_CONFIG, ModelStore, is_onnx_folder
from edge_agent.settings import Settings

if TYPE_CHECKING:
    from edge_agent.models.gguf import GGUFHeader

MIN_CONTEXT = 512
# A context sized to the device's skills is a multiple of this, never under SKILL_CONTEXT_FLOOR:
# room for what no bound counts (a clarifying question, a conversation `chat` carries over).
CONTEXT_STEP = 256
SKILL_CONTEXT_FLOOR = 1024


@dataclass(frozen=True)
class ContextNeed:
    """The most tokens one turn of the device's skills takes, and whose need it is."""

    tokens: int
    source: str  # "skill home"

    @property
    def context_size(self) -> int:
        """The context that holds it: rounded up to CONTEXT_STEP, at least the floor."""
        steps = -(-self.tokens // CONTEXT_STEP)
        return max(SKILL_CONTEXT_FLOOR, steps * CONTEXT_STEP)


# What a model's turns need (None: not known, the profile's context stands); asked per model,
# as a skill with an adapter for that model needs far less than one running it bare.
NeedFn = Callable[[CatalogEntry], "ContextNeed | None"]


@dataclass
class Candidate:
    entry: CatalogEntry
    context_size: int
    ram_mb: float
    fits: bool
    available: bool
    need: ContextNeed | None = None  # the context was sized to it


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

    @property
    def backend(self) -> str:
        """The backend kind that runs the chosen model (its format decides, see above)."""
        return self.entry.backend

    def backend_options(self) -> dict[str, Any]:
        """Keyword arguments for ``open_backend(self.backend, ...)``."""
        p = self.profile
        common = {"n_ctx": self.context_size, "n_threads": self.threads}
        if self.backend == "onnx":
            return common | {
                "execution_provider": p.execution_provider,
                "fallback_to_cpu": p.fallback_to_cpu,
            }
        return common | {
            "n_gpu_layers": p.gpu_layers,
            "flash_attn": p.flash_attention,
            "use_mmap": p.use_mmap,
            "use_mlock": p.use_mlock,
            "kv_cache_type": p.kv_cache_type,
            "draft_tokens": p.draft_tokens,
        }

    def memory_mb(self) -> dict[str, float]:
        """The estimated resident memory by part (weights, KV cache, buffers, runtime, total)."""
        p = self.profile
        return self.entry.ram_breakdown(self.context_size, p.kv_cache_type, p.flash_attention)

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
            "backend": self.backend,
            "execution_provider": self.profile.execution_provider,
            "context_size": self.context_size,
            "threads": self.threads,
            "gpu_layers": self.profile.gpu_layers,
            "kv_cache_type": self.profile.kv_cache_type,
            "flash_attention": self.profile.flash_attention,
            "estimated_ram_mb": round(self.ram_mb),
            "memory_mb": {k: round(v, 1) for k, v in self.memory_mb().items()},
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
    *,
    need: NeedFn | None = None,
) -> FitPlan:
    """The plan for this device. ``need`` says how many tokens a model's turns take (the
    device's skills, see `runtime.skills_need`): without an explicit ``context_size`` the
    context is the profile's, or less where the need is smaller."""
    device = device or resolve_device(settings)
    budget = device.profile.memory_budget_mb(device.facts)
    threads = settings.threads or device.profile.resolved_threads(device.facts)
    if settings.model:
        entry = _requested_entry(settings.model, catalog)
        one = _candidate(entry, settings, device.profile, budget, store, need_of=need, shrink=True)
        cands = [one]
    else:
        cands = [
            _candidate(e, settings, device.profile, budget, store, need_of=need)
            for e in catalog.entries
            if e.instruct
        ]
    try:
        chosen, reasons = _choose(cands, settings, device.profile, budget)
    except ModelDoesNotFitError as exc:
        others = assess_catalog(settings, catalog, store, device, need=need)
        raise ModelDoesNotFitError(f"{exc}; {_would_fit(others)}") from None
    plan = FitPlan(device, chosen.entry, chosen.context_size, threads, budget, chosen.ram_mb)
    plan.reasons = [f"profile {device.profile.name}: {device.reason}", *reasons]
    if chosen.entry.backend != device.profile.backend:
        plan.reasons.append(_why_backend(chosen.entry, device.profile))
    plan.candidates = cands
    return plan


def assess_catalog(
    settings: Settings,
    catalog: Catalog,
    store: ModelStore,
    device: DetectedDevice,
    *,
    need: NeedFn | None = None,
) -> list[Candidate]:
    """Every catalog entry with the context it would get here, its RAM and whether it fits."""
    budget = device.profile.memory_budget_mb(device.facts)
    return [
        _candidate(e, settings, device.profile, budget, store, need_of=need)
        for e in catalog.entries
    ]


def _requested_entry(model: str, catalog: Catalog) -> CatalogEntry:
    if model in catalog:
        return catalog.get(model)
    return entry_from_path(Path(model).expanduser())


def entry_from_path(path: Path) -> CatalogEntry:
    """A catalog entry for a model the user pointed at: a GGUF file or an ONNX model folder."""
    if is_onnx_folder(path):
        return entry_from_onnx(path)
    if path.is_dir():
        raise ModelNotFoundError(
            f"{path} is a folder without {GENAI_CONFIG}: pass a .gguf file or an ONNX model "
            "folder (`edge-agent quantize BASE --variants onnx-int4` builds one)"
        )
    return entry_from_gguf(path)


def entry_from_gguf(path: Path) -> CatalogEntry:
    """A catalog entry describing a GGUF the user pointed at, read from its header."""
    from edge_agent.models.gguf import identity_of, read_header

    header = read_header(path)
    ident = identity_of(header)
    try:
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
    except ValidationError as exc:  # a 0 the memory estimate would divide or multiply by
        shape = ", ".join(f"{e['loc'][0]}={e['input']!r}" for e in exc.errors())
        raise InvalidModelFileError(
            f"{path}: its header gives {shape}; a model needs each to be at least 1"
        ) from exc
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


def entry_from_onnx(folder: Path) -> CatalogEntry:
    """A catalog entry describing an ONNX model folder: its shape from ``genai_config.json``
    (and ``config.json`` where the builder left one), name of base, FFN width and precision
    from the ``edge_agent.json`` that ``quantize`` writes, size from the files on disk."""
    genai = _folder_json(folder, GENAI_CONFIG, required=True)
    info = _folder_json(folder, "edge_agent.json")
    ident = info.get("base_identity") or {}
    try:
        model = genai["model"]
        arch = _onnx_arch(model, ident, _folder_json(folder, "config.json"))
        family = str(model.get("type") or ident.get("architecture") or "unknown")
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError included
        raise InvalidModelFileError(
            f"{folder / GENAI_CONFIG}: does not describe the model's shape ({exc}); rebuild "
            "the folder with `edge-agent quantize BASE --variants onnx-int4`"
        ) from exc
    precision = str(info.get("precision") or "")
    return CatalogEntry(
        name=folder.name,
        family=family,
        base_model=str(ident.get("base_name") or folder.name),
        parameters=_parameters(arch),
        quantization=f"ONNX_{precision.upper()}" if precision else "ONNX",
        file_size_mb=sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / MB,
        size_estimated=False,
        license="unknown",
        format="onnx",
        source=Source(kind="path", path=str(folder)),
        arch=arch,
    )


def _onnx_arch(model: dict[str, Any], ident: dict[str, Any], hf: dict[str, Any]) -> Architecture:
    decoder = model["decoder"]
    n_embd, n_head = int(decoder["hidden_size"]), int(decoder["num_attention_heads"])
    # genai_config has no FFN width; it only sizes the compute-buffer estimate, so without
    # edge_agent.json or config.json the usual 4x hidden stands in.
    n_ff = ident.get("n_ff") or hf.get("intermediate_size") or 4 * n_embd
    return Architecture(
        n_layer=int(decoder["num_hidden_layers"]),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=int(decoder.get("num_key_value_heads") or n_head),
        head_dim=int(decoder.get("head_size") or n_embd // n_head),
        n_ff=int(n_ff),
        n_vocab=int(model["vocab_size"]),
        context_max=int(model.get("context_length") or 2048),
    )


def _parameters(a: Architecture) -> int:
    """Weights of a llama-shaped decoder (embeddings once): for ranking, not for memory."""
    attention = a.n_embd * a.head_dim * (2 * a.n_head + 2 * a.n_head_kv)
    return a.n_vocab * a.n_embd + a.n_layer * (attention + 3 * a.n_embd * a.n_ff)


def _folder_json(folder: Path, name: str, *, required: bool = False) -> dict[str, Any]:
    path = folder / name
    if not path.is_file() and not required:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidModelFileError(
            f"{path}: cannot be read as JSON ({exc}); rebuild the ONNX model folder"
        ) from exc
    return data if isinstance(data, dict) else {}


def _candidate(
    entry: CatalogEntry,
    settings: Settings,
    profile: DeviceProfile,
    budget: int,
    store: ModelStore,
    *,
    need_of: NeedFn | None = None,
    shrink: bool = False,
) -> Candidate:
    """The entry at the context its turns need (at most the profile's), or for a model the
    user asked for by name, at the largest context (halving) that fits; a context the user set
    explicitly is never shrunk nor sized."""
    need = need_of(entry) if need_of and not settings.context_size else None
    wanted = settings.context_size or profile.context_size
    if need is not None and need.context_size < wanted:
        wanted = need.context_size
    else:
        need = None  # the profile's context is the smaller: it stands
    wanted = min(wanted, entry.arch.context_max)
    floor = min(MIN_CONTEXT, wanted) if shrink and not settings.context_size else wanted
    ctx = wanted
    while True:
        ram = entry.ram_needed_mb(ctx, profile.kv_cache_type, profile.flash_attention)
        if ram <= budget or ctx // 2 < floor:
            break
        ctx //= 2
    available = entry.source.kind == "path" or store.is_available(entry)
    return Candidate(entry, ctx, ram, ram <= budget, available, need)


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


def _rank(c: Candidate, profile: DeviceProfile) -> tuple[int, bool, int]:
    """Bigger models first; among one size, those the profile's backend runs, then the
    profile's quantization preference."""
    prefs = [q.upper() for q in profile.preferred_quantizations]
    quant = c.entry.quantization.upper()
    pref = len(prefs) - prefs.index(quant) if quant in prefs else 0
    return c.entry.parameters, c.entry.backend == profile.backend, pref


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


def _why_backend(entry: CatalogEntry, profile: DeviceProfile) -> str:
    if entry.format == "gguf":
        return (
            f"backend llama_cpp, not the profile's onnx: {entry.name} is a GGUF file, which "
            "only llama.cpp runs; pass an ONNX model folder (`edge-agent quantize`) for onnx"
        )
    return (
        f"backend onnx, not the profile's {profile.backend}: {entry.name} is an ONNX model "
        f"folder (execution provider {profile.execution_provider})"
    )


def _why_context(best: Candidate, settings: Settings, profile: DeviceProfile) -> str:
    need = best.need
    wanted = need.context_size if need else settings.context_size or profile.context_size
    if need is not None and best.context_size == wanted:
        return (
            f"context {best.context_size} sized to {need.source} (longest turn ~{need.tokens} "
            f"tokens; profile {profile.name} allows {profile.context_size}; set context_size "
            "to override)"
        )
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
