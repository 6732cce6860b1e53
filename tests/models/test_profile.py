"""Device profiles load and validate; detection picks the right one from real device dumps."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError, UnknownProfileError
from edge_agent.models.profile import (
    DeviceProfile,
    MachineFacts,
    detect,
    list_profiles,
    load_profile,
    read_facts,
)

DEVICES = Path(__file__).parents[1] / "fixtures" / "devices"
SHIPPED = sorted(
    f.name.removesuffix(".toml")
    for f in resources.files("device_profiles").iterdir()
    if f.name.endswith(".toml")
)


def _sysctl_from(path: Path) -> Callable[[str], str | None]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(": ")
        values[key] = value
    return values.get


def _facts(**over: object) -> MachineFacts:
    base: dict[str, object] = {"os": "linux", "arch": "x86_64", "total_ram_mb": 8192}
    return MachineFacts.model_validate({**base, **over})


def _write_profile(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


# --- every shipped profile -------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_and_validates(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.description
    if profile.execution_provider == "cpu":
        assert profile.gpu_layers == 0
    else:
        assert profile.gpu_layers > 0
        assert profile.memory.unified  # every GPU device we ship shares RAM with the CPU
    raw = (resources.files("device_profiles") / f"{name}.toml").read_text()
    assert raw.lstrip().startswith("#"), "each profile opens with a comment saying why"


def test_the_issue_device_classes_all_ship() -> None:
    wanted = {
        "generic-x86-64",
        "generic-arm64",
        "raspberry-pi-4",
        "raspberry-pi-5",
        "jetson-orin-nano",
        "jetson-agx-orin",
        "apple-silicon",
    }
    assert wanted <= {p.name for p in list_profiles()}


def test_arm_cpu_profiles_prefer_q4_0() -> None:
    for name in ("raspberry-pi-4", "raspberry-pi-5", "generic-arm64"):
        assert load_profile(name).preferred_quantizations[0] == "Q4_0"
    assert load_profile("generic-x86-64").preferred_quantizations[0] == "Q4_K_M"


# --- detection from real dumps ---------------------------------------------------------------


def test_detects_x86_64_desktop() -> None:
    found = detect(DEVICES / "generic-x86-64")
    assert found.profile.name == "generic-x86-64"
    facts = found.facts
    assert (facts.os, facts.arch) == ("linux", "x86_64")
    assert facts.cpu_model == "AMD Ryzen 7 2700X Eight-Core Processor"
    assert (facts.physical_cores, facts.logical_cores) == (8, 16)
    assert facts.total_ram_mb == 8028860 // 1024
    assert facts.available_ram_mb == 4678844 // 1024
    assert "avx2" in facts.cpu_flags
    assert found.reason == "arch is x86_64"
    assert found.profile.resolved_threads(facts) == 8


def test_detects_raspberry_pi_4_from_cpuinfo_model_line() -> None:
    found = detect(DEVICES / "raspberry-pi-4")
    assert found.profile.name == "raspberry-pi-4"
    assert found.facts.arch == "aarch64"
    assert (found.facts.physical_cores, found.facts.logical_cores) == (4, 4)
    assert found.facts.cpu_flags == ["fp", "asimd", "evtstrm", "crc32", "cpuid"]
    assert found.reason == "cpuinfo model says 'Raspberry Pi 4 Model B Rev 1.4'"
    assert found.profile.resolved_threads(found.facts) == 4


def test_detects_raspberry_pi_5() -> None:
    found = detect(DEVICES / "raspberry-pi-5")
    assert found.profile.name == "raspberry-pi-5"
    assert "Raspberry Pi 5 Model B Rev 1.0" in found.reason
    assert found.profile.resolved_threads(found.facts) == 1  # the dump has no per-core blocks


def test_detects_jetson_orin_nano_from_device_tree_and_tegra_release() -> None:
    found = detect(DEVICES / "jetson-orin-nano")
    assert found.profile.name == "jetson-orin-nano"
    facts = found.facts
    assert facts.device_model == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert facts.device_model_source == "device-tree"
    assert facts.tegra_release == "R36 (release), REVISION: 4.7"
    assert facts.total_ram_mb == 7802736 // 1024
    assert found.reason.startswith("device-tree model says 'NVIDIA Jetson Orin Nano")
    assert "nv_tegra_release says 'R36 (release), REVISION: 4.7'" in found.reason
    # (7619 - 1536) * 0.6: unified memory, so the GPU weights come out of this too
    assert found.profile.memory_budget_mb(facts) == int((7802736 // 1024 - 1536) * 0.6)
    assert found.profile.execution_provider == "cuda"


def test_detects_apple_silicon_from_real_sysctl_output() -> None:
    found = detect(Path("/nonexistent"), sysctl=_sysctl_from(DEVICES / "apple-m3-max/sysctl.txt"))
    assert found.profile.name == "apple-silicon"
    facts = found.facts
    assert (facts.os, facts.arch) == ("darwin", "aarch64")
    assert facts.total_ram_mb == 128 * 1024
    assert (facts.physical_cores, facts.logical_cores) == (16, 16)
    assert facts.cpu_flags == ["dotprod", "i8mm", "bf16"]
    assert found.reason == "os is darwin and arch is aarch64"
    assert found.profile.memory_budget_mb(facts) == int((128 * 1024 - 2048) * 0.65)


def test_intel_mac_is_not_apple_silicon() -> None:
    values = {"hw.optional.arm64": "0", "hw.memsize": "17179869184", "hw.physicalcpu": "6"}
    found = detect(sysctl=values.get)
    assert found.profile.name == "generic-x86-64"


def test_a_jetson_model_string_without_tegra_release_is_not_a_jetson(tmp_path: Path) -> None:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nCPU architecture: 8\n")
    assert detect(tmp_path).profile.name == "generic-arm64"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 3.0, GCID: 1\n")
    assert detect(tmp_path).profile.name == "jetson-agx-orin"


def test_unknown_architecture_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no device profile matches"):
        detect(tmp_path)  # empty root: arch unknown, no model


# --- memory and threads -----------------------------------------------------------------------


def test_cgroup_v2_limit_caps_usable_ram_and_budget(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal:       16384000 kB\n")
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/memory.max").write_text(f"{2048 * 1024 * 1024}\n")
    facts = read_facts(tmp_path)
    assert facts.cgroup_limit_mb == 2048
    assert facts.usable_ram_mb == 2048
    assert load_profile("generic-x86-64").memory_budget_mb(facts) == int((2048 - 1024) * 0.6)


def test_cgroup_v1_unlimited_and_v2_max_mean_no_limit(tmp_path: Path) -> None:
    (tmp_path / "sys/fs/cgroup/memory").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/memory.max").write_text("max\n")
    (tmp_path / "sys/fs/cgroup/memory/memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert read_facts(tmp_path).cgroup_limit_mb is None
    (tmp_path / "sys/fs/cgroup/memory/memory.limit_in_bytes").write_text("536870912\n")
    assert read_facts(tmp_path).cgroup_limit_mb == 512


def test_budget_never_negative_and_threads_capped() -> None:
    profile = load_profile("raspberry-pi-4")
    assert profile.memory_budget_mb(_facts(total_ram_mb=300)) == 0
    fixed = profile.model_copy(update={"threads": 8})
    assert fixed.resolved_threads(_facts(physical_cores=4, logical_cores=4)) == 4
    assert fixed.resolved_threads(_facts()) == 8  # core count unknown: trust the profile


# --- errors -----------------------------------------------------------------------------------


def test_unknown_profile_name_lists_known_names() -> None:
    with pytest.raises(UnknownProfileError) as info:
        load_profile("raspberry-pi-9")
    message = str(info.value)
    assert "raspberry-pi-9" in message
    for name in SHIPPED:
        assert name in message


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    bad = _write_profile(tmp_path, "broken", 'name = "broken"\nthreads = [unclosed\n')
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        list_profiles([tmp_path])
    assert str(bad) in str(info.value)


def test_invalid_field_names_the_file_and_field(tmp_path: Path) -> None:
    text = (resources.files("device_profiles") / "generic-x86-64.toml").read_text()
    bad = _write_profile(
        tmp_path, "generic-x86-64", text.replace('kv_cache_type = "q8_0"', 'kv_cache_type = "q5_1"')
    )
    with pytest.raises(ConfigError) as info:
        load_profile("generic-x86-64", [tmp_path])
    assert str(bad) in str(info.value)
    assert "'kv_cache_type'" in str(info.value)


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    text = (resources.files("device_profiles") / "generic-arm64.toml").read_text()
    _write_profile(tmp_path, "generic-arm64", text + "\n[extra]\nturbo = true\n")
    with pytest.raises(ConfigError, match="field 'extra'"):
        load_profile("generic-arm64", [tmp_path])


def test_quantized_kv_cache_without_flash_attention_is_rejected() -> None:
    data = load_profile("raspberry-pi-4").model_dump()
    data["flash_attention"] = False
    with pytest.raises(ValueError, match="needs flash_attention"):
        DeviceProfile.model_validate(data)


def test_user_profile_overrides_shipped_one(tmp_path: Path) -> None:
    text = (resources.files("device_profiles") / "raspberry-pi-5.toml").read_text()
    _write_profile(
        tmp_path, "raspberry-pi-5", text.replace("context_size = 4096", "context_size = 512")
    )
    assert load_profile("raspberry-pi-5", [tmp_path]).context_size == 512
    assert load_profile("raspberry-pi-5").context_size == 4096


def test_file_name_must_match_profile_name(tmp_path: Path) -> None:
    text = (resources.files("device_profiles") / "generic-arm64.toml").read_text()
    _write_profile(tmp_path, "my-board", text)
    with pytest.raises(ConfigError, match="field 'name'"):
        list_profiles([tmp_path])


# --- robustness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "junk",
    [b"", b"\xff\xfe\x00garbage\n:::\n", b"MemTotal: lots kB\nprocessor\t: x\n", b"\0" * 4096],
)
def test_garbage_proc_files_do_not_crash(tmp_path: Path, junk: bytes) -> None:
    for rel in (
        "proc/cpuinfo",
        "proc/meminfo",
        "proc/device-tree/model",
        "etc/nv_tegra_release",
        "sys/fs/cgroup/memory.max",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(junk)
    facts = read_facts(tmp_path)
    assert facts.total_ram_mb == 0
    assert facts.logical_cores == 0
    assert facts.cgroup_limit_mb is None


def test_directory_where_a_file_should_be_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "proc/meminfo").mkdir(parents=True)
    assert read_facts(tmp_path).total_ram_mb == 0


def test_real_machine_facts_are_sane() -> None:
    facts = read_facts()
    assert facts.logical_cores >= 1
    assert facts.total_ram_mb > 0
    assert detect().profile.resolved_threads(facts) >= 1
