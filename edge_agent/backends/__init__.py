"""Inference backends behind one contract, opened by kind name.

Kinds are registered as ``"module:Class"`` strings and imported only when opened, so that
``import edge_agent`` never loads llama.cpp (or onnxruntime) into the process.
``check_schema`` holds a JSON schema to the limits every backend enforces before it
constrains output to it (see ``_schema_limits``).
"""

from __future__ import annotations

import importlib
from typing import Any

from edge_agent.backends._schema_limits import bounded_schema, check_schema
from edge_agent.backends.base import (
    Backend,
    Chunk,
    Completion,
    Done,
    GenerationRequest,
    Message,
    Timings,
    Usage,
)
from edge_agent.errors import ConfigError

__all__ = [
    "Backend",
    "Chunk",
    "Completion",
    "Done",
    "GenerationRequest",
    "Message",
    "Timings",
    "Usage",
    "available_backends",
    "bounded_schema",
    "check_schema",
    "open_backend",
    "register_backend",
]

_REGISTRY: dict[str, str] = {}


def register_backend(kind: str, target: str) -> None:
    """Register ``target`` ("package.module:ClassName") under ``kind``; names are unique."""
    if kind in _REGISTRY:
        raise ConfigError(f"backend kind {kind!r} is already registered ({_REGISTRY[kind]})")
    if ":" not in target:
        raise ConfigError(f"backend target {target!r} must look like 'package.module:Class'")
    _REGISTRY[kind] = target


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def open_backend(kind: str, **options: Any) -> Backend:
    """Import the backend registered as ``kind`` and construct it with ``options``."""
    target = _REGISTRY.get(kind)
    if target is None:
        known = ", ".join(available_backends())
        raise ConfigError(f"unknown backend {kind!r}; choose one of: {known}")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls(**options)
    return backend


register_backend("llama_cpp", "edge_agent.backends.llama_cpp:LlamaCppBackend")
register_backend("fake", "edge_agent.backends.fake:ScriptedBackend")
register_backend("onnx", "edge_agent.backends.onnx:OnnxBackend")
