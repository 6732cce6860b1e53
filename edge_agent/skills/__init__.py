"""Built-in skills — home, system, bfcl — one module or package each, all the same shape.

Every skill exposes ``toolset() -> edge_agent.tools.Toolset`` building its toolset with its
defaults; `edge_agent.tools.get_toolset` imports the module only when the toolset is first asked
for, so ``home`` reads its intents and inventory only when used.
"""

from __future__ import annotations


def keep_words() -> set[str]:
    """Words the device's skills need readable in what leaves it (the anonymizer keeps them):
    the names in the home."""
    from edge_agent.skills.home.inventory import Inventory

    return Inventory.default().keep_words()
