"""Device profiles and the hardware detection that picks one.

A profile is a TOML file in `device_profiles/` (or a user folder passed as `extra_dirs`):
how much memory the model may use, how many threads, which backend and quantizations suit the
device. `read_facts()` reads what the machine is from /proc, /sys, /etc (or `sysctl` on macOS)
under a root folder, so tests can point it at fake roots built from real dumps. `detect()`
matches the facts against every profile's `[detect]` rule, most specific first.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from edge_agent.errors import ConfigError, UnknownProfileError

__all__ = [
    "DetectRule",
    "DetectedDevice",
    "DeviceProfile",
    "MachineFacts",
    "MemoryRule",
    "SysctlReader",
    "detect",
    "list_profiles",
    "load_profile",
    "read_facts",
]

Quantization = Literal[
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_1",
    "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_NL", "IQ4_XS", "F16", "BF16", "F32",
]  # fmt: skip
SysctlReader = Callable[[str], "str | None"]

_MAX_READ = 1 << 20  # /proc files are small; never slurp something huge planted in a fake root
_UNLIMITED_BYTES = 1 << 60  # cgroup v1 writes ~2**63 for "no limit"
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryRule(_Strict):
    """Budget = (usable RAM - reserve_mb) * fraction, never below zero."""

    fraction: float = Field(gt=0, le=1)
    reserve_mb: int = Field(ge=0)
    unified: bool = False  # CPU and GPU share this RAM (Jetson, Apple): the budget covers both


class DetectRule(_Strict):
    """Every condition given must hold; an empty list means "any"."""

    os: Literal["linux", "darwin"] | None = None
    arch: list[str] = []
    device_model: list[str] = []  # substrings of the device-tree model, case-insensitive
    tegra: bool = False  # require /etc/nv_tegra_release
    priority: int = 0  # higher is more specific and is tried first

    def match(self, facts: MachineFacts) -> str | None:
        """Why these facts match, or None when they do not."""
        if self.os and facts.os != self.os:
            return None
        if self.arch and facts.arch not in self.arch:
            return None
        if self.tegra and facts.tegra_release is None:
            return None
        model = facts.device_model or ""
        if self.device_model and not any(s.lower() in model.lower() for s in self.device_model):
            return None
        return self._reason(facts)

    def _reason(self, facts: MachineFacts) -> str:
        parts = []
        if self.device_model:
            parts.append(f"{facts.device_model_source} model says {facts.device_model!r}")
        if self.tegra:
            parts.append(f"/etc/nv_tegra_release says {facts.tegra_release!r}")
        if self.os:
            parts.append(f"os is {facts.os}")
        if self.arch:
            parts.append(f"arch is {facts.arch}")
        if not parts:
            return "its rule matches any machine"
        return " and ".join(parts)


class DeviceProfile(_Strict):
    name: str
    description: str
    detect: DetectRule
    memory: MemoryRule
    threads: Literal["auto"] | PositiveInt = "auto"  # "auto" = physical cores
    backend: Literal["llama_cpp", "onnx"] = "llama_cpp"
    execution_provider: Literal["cpu", "cuda", "metal"] = "cpu"
    fallback_to_cpu: bool = True  # the onnx backend may run on CPU if the provider cannot load
    gpu_layers: int = Field(default=0, ge=0)  # 999 = every layer
    flash_attention: bool = False
    use_mmap: bool = True
    use_mlock: bool = False
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = "f16"
    # Prompt-lookup draft tokens per decode step (llama_cpp; 0 = off). Off by default: on a
    # 2-core x86 box a guessed token costs about what it saves (scripts/bench/bench_turn.py).
    draft_tokens: int = Field(default=0, ge=0, le=16)
    preferred_quantizations: list[Quantization] = Field(min_length=1)
    context_size: int = Field(ge=128)

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        if self.execution_provider == "cpu" and self.gpu_layers:
            raise ValueError("gpu_layers must be 0 when execution_provider is 'cpu'")
        # llama.cpp refuses a quantized V cache without flash attention.
        if self.kv_cache_type != "f16" and not self.flash_attention:
            raise ValueError(f"kv_cache_type {self.kv_cache_type!r} needs flash_attention = true")
        if len(set(self.preferred_quantizations)) != len(self.preferred_quantizations):
            raise ValueError("preferred_quantizations lists a quantization twice")
        return self

    def memory_budget_mb(self, facts: MachineFacts) -> int:
        """Megabytes the model, its KV cache and buffers may use on this machine."""
        spare = facts.usable_ram_mb - self.memory.reserve_mb
        return max(0, int(spare * self.memory.fraction))

    def resolved_threads(self, facts: MachineFacts) -> int:
        """Threads for the backend: never more than the machine has, never fewer than one."""
        if self.threads == "auto":
            return max(1, facts.physical_cores or facts.logical_cores)
        if facts.logical_cores:
            return min(self.threads, facts.logical_cores)
        return self.threads


class MachineFacts(_Strict):
    """What the hardware is; 0 or None where a source was missing or unreadable."""

    os: Literal["linux", "darwin"]
    arch: str
    total_ram_mb: int = 0
    available_ram_mb: int | None = None
    cgroup_limit_mb: int | None = None
    cpu_model: str | None = None
    physical_cores: int = 0
    logical_cores: int = 0
    device_model: str | None = None
    device_model_source: str | None = None  # "device-tree" or "cpuinfo"
    tegra_release: str | None = None
    cpu_flags: list[str] = []

    @property
    def usable_ram_mb(self) -> int:
        """RAM this process may really use: a container limit wins over the machine's RAM."""
        if self.cgroup_limit_mb is not None and self.total_ram_mb:
            return min(self.total_ram_mb, self.cgroup_limit_mb)
        return self.cgroup_limit_mb if self.cgroup_limit_mb is not None else self.total_ram_mb


class DetectedDevice(_Strict):
    facts: MachineFacts
    profile: DeviceProfile
    reason: str


# --- loading profiles -------------------------------------------------------------------------


def _profile_files(extra_dirs: Iterable[Path]) -> Iterator[Traversable]:
    yield from sorted(resources.files("device_profiles").iterdir(), key=lambda f: f.name)
    for folder in extra_dirs:
        if not Path(folder).is_dir():
            raise ConfigError(f"profile folder {folder} does not exist; create it or drop it")
        yield from sorted(Path(folder).iterdir())


def _parse_profile(file: Traversable) -> DeviceProfile:
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"device profile {file}: not valid TOML ({exc}); fix the file") from exc
    try:
        profile = DeviceProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(part) for part in err["loc"]) or "(whole file)"
        raise ConfigError(f"device profile {file}: field '{field}': {err['msg']}") from exc
    stem = file.name.removesuffix(".toml")
    if profile.name != stem:
        raise ConfigError(f"device profile {file}: field 'name' is {profile.name!r}, not {stem!r}")
    return profile


def list_profiles(extra_dirs: Iterable[Path] = ()) -> list[DeviceProfile]:
    """Every profile, shipped ones first; a user file with the same name replaces a shipped one."""
    found: dict[str, DeviceProfile] = {}
    for file in _profile_files(extra_dirs):
        if file.name.endswith(".toml") and file.is_file():
            profile = _parse_profile(file)
            found[profile.name] = profile
    return list(found.values())


def load_profile(name: str, extra_dirs: Iterable[Path] = ()) -> DeviceProfile:
    profiles = {p.name: p for p in list_profiles(extra_dirs)}
    if name not in profiles:
        known = ", ".join(sorted(profiles))
        raise UnknownProfileError(f"no device profile named {name!r}; known profiles: {known}")
    return profiles[name]


# --- reading the machine ----------------------------------------------------------------------


def _read(root: Path, rel: str) -> str | None:
    try:
        with open(root / rel, "rb") as f:
            return f.read(_MAX_READ).decode("utf-8", errors="replace")
    except OSError:  # missing, a directory, no permission: all normal on some machine
        return None


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip().split()[0])
    except (ValueError, IndexError):
        return None


def _meminfo(text: str | None) -> dict[str, int]:
    """MemTotal/MemAvailable/... in kB; lines that do not parse are skipped."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, rest = line.partition(":")
        value = _int(rest)
        if value is not None and value >= 0:
            out[key.strip()] = value
    return out


def _cpuinfo_blocks(text: str | None) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = [{}]
    for line in (text or "").splitlines():
        if not line.strip():
            blocks.append({})
            continue
        key, sep, value = line.partition(":")
        if sep:
            blocks[-1].setdefault(key.strip(), value.strip())
    return [b for b in blocks if b]


def _cpu_counts(blocks: list[dict[str, str]]) -> tuple[int, int]:
    """(physical, logical). ARM cpuinfo has no core ids and no SMT: physical = logical."""
    cpus = [b for b in blocks if b.get("processor", "").isdigit()]
    cores = {(b.get("physical id"), b["core id"]) for b in cpus if "core id" in b}
    return (len(cores) or len(cpus)), len(cpus)


def _first(blocks: list[dict[str, str]], *keys: str) -> str | None:
    for block in blocks:
        for key in keys:
            if block.get(key):
                return block[key]
    return None


def _arch_from_cpuinfo(blocks: list[dict[str, str]], flags: list[str]) -> str | None:
    arm = _first(blocks, "CPU architecture")
    if arm:
        return "aarch64" if arm.startswith("8") else f"armv{arm[:1]}l"
    if _first(blocks, "vendor_id"):
        return "x86_64" if "lm" in flags else "i686"
    return None


def _cgroup_limit_mb(root: Path) -> int | None:
    for rel in ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"):
        limit = _int(_read(root, rel))  # "max" (v2, unlimited) parses as None
        if limit is not None and 0 < limit < _UNLIMITED_BYTES:
            return limit // (1024 * 1024)
    return None


def _device_model(root: Path, blocks: list[dict[str, str]]) -> tuple[str | None, str | None]:
    tree = (_read(root, "proc/device-tree/model") or "").strip("\x00\n\t ")
    if tree:
        return tree, "device-tree"
    model = _first(blocks, "Model")  # Raspberry Pi kernels add it; x86 "model" is a number
    return (model, "cpuinfo") if model else (None, None)


def _tegra_release(root: Path) -> str | None:
    for line in (_read(root, "etc/nv_tegra_release") or "").splitlines():
        text = line.lstrip("# ").strip()
        if text:
            return text.split(", GCID")[0]
    return None


def _linux_facts(root: Path) -> MachineFacts:
    blocks = _cpuinfo_blocks(_read(root, "proc/cpuinfo"))
    mem = _meminfo(_read(root, "proc/meminfo"))
    flags = (_first(blocks, "flags", "Features") or "").split()
    physical, logical = _cpu_counts(blocks)
    model, model_source = _device_model(root, blocks)
    arch = _arch_from_cpuinfo(blocks, flags)
    if arch is None:
        arch = platform.machine() if root == Path("/") else "unknown"
    available = mem.get("MemAvailable", mem.get("MemFree"))
    return MachineFacts(
        os="linux",
        arch=_ARCH_ALIASES.get(arch.lower(), arch.lower()),
        total_ram_mb=mem.get("MemTotal", 0) // 1024,
        available_ram_mb=None if available is None else available // 1024,
        cgroup_limit_mb=_cgroup_limit_mb(root),
        cpu_model=_first(blocks, "model name"),
        physical_cores=physical,
        logical_cores=logical,
        device_model=model,
        device_model_source=model_source,
        tegra_release=_tegra_release(root),
        cpu_flags=flags,
    )


_DARWIN_FEATURES = {"dotprod": "FEAT_DotProd", "i8mm": "FEAT_I8MM", "bf16": "FEAT_BF16"}


def _darwin_facts(sysctl: SysctlReader) -> MachineFacts:
    arm = (sysctl("hw.optional.arm64") or "").strip() == "1"  # true even under Rosetta
    features = [
        short
        for short, key in _DARWIN_FEATURES.items()
        if (sysctl(f"hw.optional.arm.{key}") or "").strip() == "1"
    ]
    memsize = _int(sysctl("hw.memsize")) or 0
    return MachineFacts(
        os="darwin",
        arch="aarch64" if arm else "x86_64",
        total_ram_mb=memsize // (1024 * 1024),
        cpu_model=(sysctl("machdep.cpu.brand_string") or "").strip() or None,
        physical_cores=_int(sysctl("hw.physicalcpu")) or 0,
        logical_cores=_int(sysctl("hw.logicalcpu")) or 0,
        cpu_flags=features,
    )


def _run_sysctl(key: str) -> str | None:
    try:
        done = subprocess.run(
            ["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def read_facts(root: Path = Path("/"), sysctl: SysctlReader | None = None) -> MachineFacts:
    """Read the machine under `root`; pass `sysctl` (key -> value) to read a Mac instead."""
    if sysctl is None and root == Path("/") and sys.platform == "darwin":
        sysctl = _run_sysctl
    if sysctl is not None:
        return _darwin_facts(sysctl)
    facts = _linux_facts(root)
    if root == Path("/") and not facts.logical_cores:
        facts.logical_cores = os.cpu_count() or 0  # cpuinfo hidden (some sandboxes)
    return facts


def detect(
    root: Path = Path("/"),
    sysctl: SysctlReader | None = None,
    extra_dirs: Iterable[Path] = (),
) -> DetectedDevice:
    """Pick the most specific profile whose `[detect]` rule matches this machine."""
    facts = read_facts(root, sysctl)
    profiles = sorted(list_profiles(extra_dirs), key=lambda p: (-p.detect.priority, p.name))
    for profile in profiles:
        reason = profile.detect.match(facts)
        if reason is not None:
            return DetectedDevice(facts=facts, profile=profile, reason=reason)
    raise ConfigError(
        f"no device profile matches this machine (os={facts.os}, arch={facts.arch}, "
        f"model={facts.device_model!r}); choose one with --profile or add a TOML profile"
    )
