"""Print the PyPI requirements of the integrations a Home Assistant config directory loads.

Run by scripts/install_hass.sh with the HA virtualenv's Python (it reads that HA's
manifests): the integrations are the config's top-level keys, the dependencies of its custom
components and those HA always sets up, closed over each manifest's "dependencies" and
"after_dependencies".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import homeassistant.components
import yaml

# Set up by HA's bootstrap whatever the config says (bootstrap.CORE/LOGGING_INTEGRATIONS).
_ALWAYS = {"homeassistant", "persistent_notification", "logger", "system_log"}


class _AnyTagLoader(yaml.SafeLoader):
    """Reads HA's custom tags (!env_var, !include, ...) as plain values: only keys matter."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _manifest(name: str, config: Path) -> dict[str, Any]:
    custom = config / "custom_components" / name / "manifest.json"
    core = Path(homeassistant.components.__path__[0]) / name / "manifest.json"
    path = custom if custom.is_file() else core
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _roots(config: Path) -> set[str]:
    keys = yaml.load((config / "configuration.yaml").read_text(), Loader=_AnyTagLoader) or {}
    return {str(key).split(" ")[0] for key in keys} - {"homeassistant"} | _ALWAYS


def requirements(config: Path) -> list[str]:
    """Every requirement of the config's integrations and their dependencies, sorted."""
    todo, seen, found = list(_roots(config)), set[str](), set[str]()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        manifest = _manifest(name, config)
        found.update(manifest.get("requirements", []))
        # after_dependencies too: their modules are imported (analytics imports recorder)
        todo.extend(manifest.get("dependencies", []) + manifest.get("after_dependencies", []))
    return sorted(found)


if __name__ == "__main__":
    print("\n".join(requirements(Path(sys.argv[1]))))
