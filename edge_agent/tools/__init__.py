"""Tools an agent can call: `Tool`, `Toolset`, the `@tool` decorator, their schemas and registry."""

from edge_agent.tools.registry import (
    ToolsetFactory,
    available_toolsets,
    get_toolset,
    register_toolset,
)
from edge_agent.tools.toolset import (
    ARGUMENT_ORDER,
    EffectRule,
    Grounding,
    Tool,
    ToolSchema,
    Toolset,
    execute,
    fingerprint,
    tool,
)

__all__ = [
    "ARGUMENT_ORDER",
    "EffectRule",
    "Grounding",
    "Tool",
    "ToolSchema",
    "Toolset",
    "ToolsetFactory",
    "available_toolsets",
    "execute",
    "fingerprint",
    "get_toolset",
    "register_toolset",
    "tool",
]
