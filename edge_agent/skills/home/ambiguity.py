"""When an action's target is too vague to act on: ask, as Home Assistant does.

HA 2024.1.6's intent API acts on every entity a name-less target matches ("HassTurnOff
domain=light" turns off every light) and, for a name several entities share, on the first one
it finds. Its sentences never produce a name-less house-wide target unless the user said so
("turn off all the lights"); "turn off the lights" needs the satellite's area. Newer releases
(2024.6+) answer a shared name they cannot narrow by the satellite's area with an error ("there
are multiple devices called ..."). Our calls come from a model, whose `HassTurnOff(domain=light)`
is the same for "turn off all the lights" and "turn off the light", so the user's words decide:
an action whose entities span several areas, with no area or floor named and no "all"/"every"
said, is refused with a question the agent gives back to the user.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from edge_agent.skills.home.inventory import Entity, Inventory

# "all the lights", "every light", "lights in each room", "the whole house", "everywhere"
_ALL = re.compile(
    r"\b(all|every|everything|everywhere|each|whole|entire|throughout|house|home|apartment)\b",
    re.IGNORECASE,
)
_HERE = re.compile(r"\b(here|this (room|space|area))\b", re.IGNORECASE)
_MAX_AREAS = 6  # areas listed in the question


def says_all(request: str | None) -> bool:
    """The request asks for everything of its kind, house-wide ("turn off all the lights")."""
    return bool(request and _ALL.search(request) and not _HERE.search(request))


def question(
    args: dict[str, Any], entities: Sequence[Entity], inventory: Inventory, request: str | None
) -> str | None:
    """What to ask the user when acting on `entities` would guess; None when it is clear.

    Clear: one entity, an area or floor named, all of them in one area, the name "all" or the
    request's "all"/"every" words, or no request known (a direct API call: HA's semantics)."""
    if len(entities) <= 1 or args.get("area") or args.get("floor"):
        return None
    places = sorted({inventory.area_name(e.area) or "no area" for e in entities})
    if len(places) <= 1:
        return None
    name = args.get("name")
    named = name is not None and str(name).casefold() != "all"
    if not named and (request is None or says_all(request) or name is not None):
        return None
    listed = ", ".join(places[:_MAX_AREAS]) + (", ..." if len(places) > _MAX_AREAS else "")
    if named:
        return (
            f"several devices are called {name!r} (in {listed}): which one? "
            "Ask the user for the area"
        )
    kind = _kind(args, entities)
    return (
        f"which {kind}? There are {len(entities)} in {listed}: ask the user for the area, "
        f"or whether to act on all of them"
    )


def _kind(args: dict[str, Any], entities: Sequence[Entity]) -> str:
    for key in ("device_class", "domain"):
        value = args.get(key)
        if value:
            return str(value[0] if isinstance(value, list) else value).replace("_", " ")
    return entities[0].domain.replace("_", " ")
