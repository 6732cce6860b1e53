"""Toolsets by name: the built-in skills' toolsets, and those an application registers."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import TypeAlias

from edge_agent.errors import ToolDefinitionError, UnknownToolsetError
from edge_agent.tools.toolset import Toolset

__all__ = ["ToolsetFactory", "available_toolsets", "get_toolset", "register_toolset"]

# name → module providing toolset(); strings, so that a skill is imported only when first used
# and this layer never imports the skills above it.
BUILTIN_TOOLSETS: dict[str, str] = {
    "home": "edge_agent.skills.home.toolset",
    "system": "edge_agent.skills.system",
}

ToolsetFactory: TypeAlias = Callable[[], Toolset]
_factories: dict[str, ToolsetFactory] = {}
_built: dict[str, Toolset] = {}
_registry_lock = threading.Lock()


def register_toolset(name: str, factory: Toolset | ToolsetFactory) -> None:
    """Register a toolset, or a factory called on first use; a taken name is rejected."""
    with _registry_lock:
        if name in _factories or name in BUILTIN_TOOLSETS:
            raise ToolDefinitionError(f"a toolset named {name!r} is already registered")
        _factories[name] = (lambda: factory) if isinstance(factory, Toolset) else factory


def get_toolset(name: str) -> Toolset:
    """The toolset by name, built once on first use (built-in ones import their module then)."""
    with _registry_lock:
        if name not in _built:
            _built[name] = _factory(name)()
        return _built[name]


def available_toolsets() -> list[str]:
    return sorted({*BUILTIN_TOOLSETS, *_factories})


def _factory(name: str) -> ToolsetFactory:
    if name in _factories:
        return _factories[name]
    if name in BUILTIN_TOOLSETS:
        module = importlib.import_module(BUILTIN_TOOLSETS[name])
        factory: ToolsetFactory = module.toolset
        return factory
    known = ", ".join(available_toolsets())
    raise UnknownToolsetError(f"no toolset named {name!r}; available: {known}")


def _unregister_toolset(name: str) -> None:
    """Tests only: forget a registered toolset."""
    with _registry_lock:
        _factories.pop(name, None)
        _built.pop(name, None)
