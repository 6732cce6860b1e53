"""The home the `home` toolset acts on: inventory, backends, retrieval, and the HA eval data."""

from edge_agent.skills.home.backend import HomeBackend, Target, resolve
from edge_agent.skills.home.inventory import (
    Area,
    Entity,
    Floor,
    Inventory,
    MediaItem,
    Timer,
    load_inventory,
)
from edge_agent.skills.home.retrieve import context_block, retrieve
from edge_agent.skills.home.simulated import SimulatedHome

__all__ = [
    "Area",
    "Entity",
    "Floor",
    "HomeBackend",
    "Inventory",
    "MediaItem",
    "SimulatedHome",
    "Target",
    "Timer",
    "context_block",
    "load_inventory",
    "resolve",
    "retrieve",
]
