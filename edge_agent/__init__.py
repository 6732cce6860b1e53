"""edge-agent: small language models that run agent tool calls on the device and get better.

The public API, for an application or an IoT daemon that embeds the agent::

    from edge_agent import Effect, Toolset, open_runtime, tool

    @tool(effect=Effect.READ_ONLY)
    def read_sensor(name: str) -> str:
        \"\"\"Reads a sensor's current value.\"\"\"
        return f"{name}: 21.5 °C"

    with open_runtime() as rt:
        print(rt.agent(Toolset("sensors", [read_sensor])).run("read the porch sensor").answer)

Names resolve on first use (PEP 562), so ``import edge_agent`` stays cheap and never loads
llama.cpp; everything else lives in the packages named after what it is (``models``,
``backends``, ``tools``, ``skills``, ``logstore``, ``routing``, ``adapters``, ``server``, ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → the module that defines it
_EXPORTS: dict[str, str] = {
    "open_runtime": "edge_agent.runtime",
    "Runtime": "edge_agent.runtime",
    "Agent": "edge_agent.agent",
    "AgentConfig": "edge_agent.agent",
    "tool": "edge_agent.tools",
    "Tool": "edge_agent.tools",
    "Toolset": "edge_agent.tools",
    "Grounding": "edge_agent.tools",
    "register_toolset": "edge_agent.tools",
    "get_toolset": "edge_agent.tools",
    "Policy": "edge_agent.policy",
    "Settings": "edge_agent.settings",
    "load_settings": "edge_agent.settings",
    "Effect": "edge_agent.types",
    "Message": "edge_agent.types",
    "ToolCall": "edge_agent.types",
    "ToolOutcome": "edge_agent.types",
    "AgentResult": "edge_agent.types",
    "Interaction": "edge_agent.types",
    "EdgeAgentError": "edge_agent.errors",
}

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentResult",
    "EdgeAgentError",
    "Effect",
    "Grounding",
    "Interaction",
    "Message",
    "Policy",
    "Runtime",
    "Settings",
    "Tool",
    "ToolCall",
    "ToolOutcome",
    "Toolset",
    "__version__",
    "get_toolset",
    "load_settings",
    "open_runtime",
    "register_toolset",
    "tool",
]

if TYPE_CHECKING:
    from edge_agent.agent import Agent, AgentConfig
    from edge_agent.errors import EdgeAgentError
    from edge_agent.policy import Policy
    from edge_agent.runtime import Runtime, open_runtime
    from edge_agent.settings import Settings, load_settings
    from edge_agent.tools import Grounding, Tool, Toolset, get_toolset, register_toolset, tool
    from edge_agent.types import AgentResult, Effect, Interaction, Message, ToolCall, ToolOutcome


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_agent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
