"""The ``home`` skill: Home Assistant's intents on the device's home (simulated by default)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.skills.skill import Skill

if TYPE_CHECKING:
    from edge_agent.settings import Settings
    from edge_agent.tools import Toolset


def _toolset(settings: Settings) -> Toolset:
    from edge_agent.skills.home.toolset import home_toolset

    # the simulated home keeps its state across runs, beside the device's other data
    return home_toolset(state_path=settings.data_dir / "home_state.json")


def _keep(settings: Settings) -> set[str]:
    from edge_agent.skills.home.inventory import Inventory

    return Inventory.default().keep_words()


skill = Skill(
    "home",
    toolset=_toolset,
    description="Home Assistant intents: lights, covers, climate, …",
    keep=_keep,
)
