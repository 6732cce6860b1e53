"""The system toolset, read from a fake /proc and /sys tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def test_real_device_reports_something() -> None:
    ts: Toolset = system.toolset()
    for t in ts:
        assert execute(t, {})["status"] in ("ok", "unavailable")
