"""The system toolset, read from a fake /proc and /sys tree."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from llama_cpp.llama_grammar import json_schema_to_gbnf

from edge_agent.errors import ToolExecutionError
from edge_agent.skills import system
from edge_agent.tools import Toolset, execute
from edge_agent.types import Effect

MEMINFO = "MemTotal:        2048000 kB\nMemFree:          100000 kB\nMemAvailable:    512000 kB\n"


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _zone(root: Path, index: int, kind: str, millidegrees: str) -> None:
    _write(root, f"sys/class/thermal/thermal_zone{index}/type", kind + "\n")
    _write(root, f"sys/class/thermal/thermal_zone{index}/temp", millidegrees + "\n")


@pytest.fixture
def device(tmp_path: Path) -> Path:
    _write(tmp_path, "proc/loadavg", "0.52 0.41 0.30 1/234 5678\n")
    _write(tmp_path, "proc/meminfo", MEMINFO)
    _write(tmp_path, "proc/uptime", "93784.21 180000.00\n")
    return tmp_path


def _call(root: Path, name: str, **arguments: Any) -> Any:
    return execute(system.toolset(root).get(name), arguments)


def test_every_tool_is_read_only_and_described() -> None:
    ts = system.toolset()
    assert ts.names == [
        "get_cpu_temperature",
        "get_load_average",
        "get_memory",
        "get_disk_usage",
        "get_uptime",
    ]
    assert all(t.effect_of({}) is Effect.READ_ONLY and t.description for t in ts)
    assert "get_disk_usage(path?: str)" in ts.describe_compact()


def test_call_schema_converts_to_gbnf() -> None:
    grammar = json_schema_to_gbnf(json.dumps(system.toolset().call_schema()))
    assert '"\\"get_uptime\\""' in grammar


def test_cpu_temperature_prefers_the_cpu_zone(device: Path) -> None:
    _zone(device, 0, "acpitz", "41000")
    _zone(device, 1, "x86_pkg_temp", "55500")
    _zone(device, 2, "iwlwifi_1", "bogus")
    result = _call(device, "get_cpu_temperature")
    assert result == {"status": "ok", "celsius": 55.5, "sensor": "x86_pkg_temp"}


def test_cpu_temperature_falls_back_to_any_zone(device: Path) -> None:
    _zone(device, 0, "battery", "30250")
    assert _call(device, "get_cpu_temperature")["celsius"] == 30.2


def test_cpu_temperature_unavailable_without_sensors(device: Path) -> None:
    _zone(device, 0, "cpu-thermal", "")  # a zone whose driver returns nothing
    result = _call(device, "get_cpu_temperature")
    assert result["status"] == "unavailable"
    assert "no temperature sensor" in result["reason"]


def test_load_memory_uptime(device: Path) -> None:
    load = _call(device, "get_load_average")
    assert (load["load_1m"], load["load_5m"], load["load_15m"]) == (0.52, 0.41, 0.30)
    memory = _call(device, "get_memory")
    assert memory == {"status": "ok", "total_mb": 2000, "available_mb": 500, "used_percent": 75.0}
    uptime = _call(device, "get_uptime")
    assert uptime == {"status": "ok", "seconds": 93784, "human": "1 d 2 h 3 min"}


def test_missing_proc_files_read_as_unavailable(tmp_path: Path) -> None:
    for name in ("get_load_average", "get_memory", "get_uptime"):
        assert _call(tmp_path, name)["status"] == "unavailable"


def test_meminfo_without_memavailable_uses_memfree(device: Path) -> None:
    _write(device, "proc/meminfo", "MemTotal: 1024000 kB\nMemFree: 256000 kB\n")
    assert _call(device, "get_memory")["used_percent"] == 75.0


def test_disk_usage_of_a_path_under_the_root(device: Path) -> None:
    (device / "data").mkdir()
    result = _call(device, "get_disk_usage", path="/data")
    assert result["status"] == "ok" and result["path"] == "/data"
    assert 0 <= result["free_gb"] <= result["total_gb"]
    assert 0 <= result["used_percent"] <= 100
    assert _call(device, "get_disk_usage")["path"] == "/"


def test_disk_usage_of_a_missing_path_is_a_tool_error(device: Path) -> None:
    with pytest.raises(ToolExecutionError, match="cannot read disk usage of '/nope'"):
        _call(device, "get_disk_usage", path="/nope")


def test_missing_proc_files_say_which_file(tmp_path: Path) -> None:
    assert "no /proc/loadavg" in _call(tmp_path, "get_load_average")["reason"]
    assert "no /proc/meminfo" in _call(tmp_path, "get_memory")["reason"]
    assert "no /proc/uptime" in _call(tmp_path, "get_uptime")["reason"]


# --- the real device: Linux has /proc, so every reading but the temperature must be there -------

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _real(name: str, **arguments: Any) -> Any:
    ts: Toolset = system.toolset()
    return execute(ts.get(name), arguments)


@linux_only
def test_real_load_average_is_the_kernels() -> None:
    def kernel() -> tuple[float, ...]:
        return tuple(float(x) for x in Path("/proc/loadavg").read_text().split()[:3])

    before = kernel()
    load = _real("get_load_average")
    after = kernel()
    assert load["status"] == "ok" and load["cpus"] == psutil.cpu_count()
    assert (load["load_1m"], load["load_5m"], load["load_15m"]) in (before, after)


@linux_only
def test_real_memory_matches_psutil() -> None:
    memory = _real("get_memory")
    assert memory["status"] == "ok"
    assert memory["total_mb"] == psutil.virtual_memory().total // 2**20
    assert 0 < memory["available_mb"] <= memory["total_mb"]
    assert 0 < memory["used_percent"] < 100


@linux_only
def test_real_uptime_is_time_since_boot() -> None:
    uptime = _real("get_uptime")
    assert uptime["status"] == "ok"
    assert uptime["seconds"] == pytest.approx(time.time() - psutil.boot_time(), abs=5)
    assert uptime["human"].endswith(" min")


def test_real_disk_usage_of_the_root() -> None:
    disk = _real("get_disk_usage")
    total = shutil.disk_usage("/").total
    assert disk["status"] == "ok" and disk["path"] == "/"
    assert disk["total_gb"] == round(total / 1024**3, 2)
    assert 0 <= disk["free_gb"] <= disk["total_gb"] and 0 < disk["used_percent"] < 100


def _machine_temperature_sources() -> bool:
    """Whether this machine exposes a temperature at all (VMs and containers often don't)."""
    for temp in Path("/sys/class/thermal").glob("thermal_zone*/temp"):
        with contextlib.suppress(OSError, ValueError):
            int(temp.read_text().strip())
            return True
    read = getattr(psutil, "sensors_temperatures", None)
    return bool(read and any(read().values()))


def test_real_cpu_temperature_is_there_exactly_when_the_machine_has_a_sensor() -> None:
    result = _real("get_cpu_temperature")
    if _machine_temperature_sources():
        assert result["status"] == "ok" and -40 < result["celsius"] < 130
    else:
        assert result == {"status": "unavailable",
                          "reason": "this device exposes no temperature sensor"}  # fmt: skip


def test_cpu_temperature_without_zones_falls_back_to_psutil(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reading = SimpleNamespace(label="Package id 0", current=47.04)
    monkeypatch.setattr(system.SystemStatus, "_thermal_zones", lambda self: [])
    sensors = {"acpitz": [SimpleNamespace(label="", current=30.0)], "coretemp": [reading]}
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: sensors, raising=False)
    result = _real("get_cpu_temperature")
    assert result == {"status": "ok", "celsius": 47.0, "sensor": "coretemp"}


@pytest.mark.parametrize("platform", ["no sensors", "no sensors api"])
def test_cpu_temperature_unavailable_where_the_platform_has_none(
    monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    monkeypatch.setattr(system.SystemStatus, "_thermal_zones", lambda self: [])
    if platform == "no sensors":  # a VM: psutil reads an empty /sys/class/hwmon
        monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {}, raising=False)
    else:  # macOS and Windows: psutil has no sensors_temperatures at all
        monkeypatch.delattr(psutil, "sensors_temperatures", raising=False)
    assert _real("get_cpu_temperature")["status"] == "unavailable"
