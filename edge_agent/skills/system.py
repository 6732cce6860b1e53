"""The ``system`` toolset: read-only status of the device the agent runs on.

Everything is read from files under a root (``/`` on a device, a fake tree in tests), so the
tools work on any Linux board without privileges and report "unavailable" rather than fail
when a board lacks a sensor.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

import psutil
from pydantic import Field

from edge_agent.errors import ToolExecutionError
from edge_agent.skills.skill import Skill
from edge_agent.tools import Tool, Toolset
from edge_agent.types import Effect

PROMPT = (
    "You can check this device's own status: CPU temperature, load, memory, disk and uptime. "
    "Call a tool when the user asks about the device; answer from its result."
)
# Zone types that measure the CPU itself, best first; other zones (battery, wifi) are a fallback.
_CPU_ZONES = ("x86_pkg_temp", "cpu", "soc", "coretemp", "k10temp", "acpitz")


class SystemStatus:
    """Reads status files under `root`; each public method is one tool."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    def cpu_temperature(self) -> dict[str, Any]:
        """Reads the CPU temperature in degrees Celsius."""
        zones = self._thermal_zones()
        if zones:
            sensor, celsius = min(zones, key=lambda zone: _zone_rank(zone[0]))
            return {"status": "ok", "celsius": celsius, "sensor": sensor}
        if self.root == Path("/") and (reading := _psutil_temperature()):
            return {"status": "ok", "celsius": reading[1], "sensor": reading[0]}
        return {"status": "unavailable", "reason": "this device exposes no temperature sensor"}

    def load_average(self) -> dict[str, Any]:
        """Reads the CPU load average over the last 1, 5 and 15 minutes."""
        text = self._read("proc/loadavg")
        if text is None:
            return {"status": "unavailable", "reason": "no /proc/loadavg on this device"}
        one, five, fifteen = (float(x) for x in text.split()[:3])
        cpus = psutil.cpu_count() if self.root == Path("/") else None
        return {"status": "ok", "load_1m": one, "load_5m": five, "load_15m": fifteen, "cpus": cpus}

    def memory(self) -> dict[str, Any]:
        """Reads how much memory (RAM) is used and available."""
        text = self._read("proc/meminfo")
        if text is None:
            return {"status": "unavailable", "reason": "no /proc/meminfo on this device"}
        info = _meminfo_kib(text)
        total, available = info.get("MemTotal"), info.get("MemAvailable", info.get("MemFree"))
        if not total or available is None:
            return {"status": "unavailable", "reason": "/proc/meminfo lacks MemTotal"}
        used_percent = round(100 * (total - available) / total, 1)
        return {
            "status": "ok",
            "total_mb": total // 1024,
            "available_mb": available // 1024,
            "used_percent": used_percent,
        }

    def disk_usage(
        self, path: Annotated[str, Field(description="Absolute path on the device")] = "/"
    ) -> dict[str, Any]:
        """Reads the disk space used and free on the filesystem holding a path."""
        target = self.root / path.lstrip("/")
        try:
            usage = shutil.disk_usage(target)
        except OSError as exc:
            raise ToolExecutionError(f"cannot read disk usage of {path!r}: {exc.strerror}") from exc
        gib = 1024**3
        return {
            "status": "ok",
            "path": path,
            "total_gb": round(usage.total / gib, 2),
            "free_gb": round(usage.free / gib, 2),
            "used_percent": round(100 * usage.used / usage.total, 1) if usage.total else 0.0,
        }

    def uptime(self) -> dict[str, Any]:
        """Reads how long the device has been running since it booted."""
        text = self._read("proc/uptime")
        if text is None:
            return {"status": "unavailable", "reason": "no /proc/uptime on this device"}
        seconds = int(float(text.split()[0]))
        return {"status": "ok", "seconds": seconds, "human": _human_duration(seconds)}

    def _read(self, relative: str) -> str | None:
        return _read_text(self.root / relative)

    def _thermal_zones(self) -> list[tuple[str, float]]:
        zones = []
        for zone in sorted((self.root / "sys/class/thermal").glob("thermal_zone*")):
            raw, kind = _read_text(zone / "temp"), _read_text(zone / "type")
            try:
                millidegrees = int((raw or "").strip())
            except ValueError:
                continue  # a zone whose driver reports an error reads as garbage or nothing
            zones.append(((kind or zone.name).strip(), round(millidegrees / 1000, 1)))
        return zones


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _zone_rank(kind: str) -> int:
    lowered = kind.lower()
    return next((i for i, key in enumerate(_CPU_ZONES) if key in lowered), len(_CPU_ZONES))


def _psutil_temperature() -> tuple[str, float] | None:
    read = getattr(psutil, "sensors_temperatures", None)  # absent on macOS and Windows
    sensors = read() if read else {}
    readings = [(name, t.current) for name, temps in sensors.items() for t in temps]
    if not readings:
        return None
    name, celsius = min(readings, key=lambda r: _zone_rank(r[0]))
    return name, round(float(celsius), 1)


def _meminfo_kib(text: str) -> dict[str, int]:
    info = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if rest.split():
            info[key.strip()] = int(rest.split()[0])
    return info


def _human_duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours or days else []
    return " ".join([*parts, f"{minutes} min"])


def toolset(root: Path = Path("/")) -> Toolset:
    """The system toolset reading under `root`; every call is read-only."""
    status = SystemStatus(root)
    methods = [
        ("get_cpu_temperature", status.cpu_temperature),
        ("get_load_average", status.load_average),
        ("get_memory", status.memory),
        ("get_disk_usage", status.disk_usage),
        ("get_uptime", status.uptime),
    ]
    tools = [
        Tool.from_function(m, effect=Effect.READ_ONLY, name=n, timeout_s=2.0) for n, m in methods
    ]
    return Toolset("system", tools, description="Read-only device status", prompt=PROMPT)


skill = Skill("system", toolset=lambda settings: toolset(), description="this device's own status")
