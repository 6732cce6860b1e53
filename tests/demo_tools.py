"""Demo tools shared by the agent and server tests: a light and a door lock on a dict."""

from typing import Annotated, Literal

from pydantic import Field

from edge_agent.tools import tool
from edge_agent.types import Effect

STATE: dict[str, object] = {}


@tool(effect=Effect.ACTUATING)
def set_light(name: str, brightness: Annotated[int, Field(ge=0, le=100)] = 100) -> dict:
    """Sets a light's brightness.

    Args:
        name: The light.
        brightness: Percent.
    """
    STATE[name] = brightness
    return {"speech": f"{name} set to {brightness}%"}


@tool(effect=Effect.DANGEROUS)
def unlock(name: Literal["front door", "back door"]) -> str:
    """Unlocks a door.

    Args:
        name: The door.
    """
    STATE[name] = "unlocked"
    return f"{name} unlocked"
