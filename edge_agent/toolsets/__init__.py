"""Built-in toolsets, one module (or package) each, all the same shape.

Every member exposes ``toolset() -> edge_agent.tools.Toolset`` building it with its defaults;
`edge_agent.tools.get_toolset` imports the module only when the toolset is first asked for, so
``home`` reads its intents and inventory only when used.
"""

from __future__ import annotations

# name → module providing toolset(); kept as strings so nothing is imported until needed.
BUILTIN_TOOLSETS: dict[str, str] = {
    "home": "edge_agent.toolsets.home",
    "system": "edge_agent.toolsets.system",
}
