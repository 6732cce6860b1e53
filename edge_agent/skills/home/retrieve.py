"""Find the few inventory entities a request is about, locally and without a model.

The agent puts them in the prompt (`context_block`) because the right arguments (domain,
device_class, state) cannot be inferred from the words alone. Training renders the same block,
so the output must be byte-stable: same inputs, same text, whatever the Python version.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

from edge_agent.skills.home.inventory import Entity, Inventory

DEFAULT_K = 6
_WORD = re.compile(r"[0-9a-z]+")
# words people use for a domain or device class that its name does not contain
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "light": ("lamp", "lamps", "lights", "bright", "brightness", "dim"),
    "cover": ("curtain", "blind", "shade", "shutter", "window", "garage", "open", "close"),
    "lock": ("locked", "unlock", "unlocked", "door"),
    "climate": ("thermostat", "temperature", "heat", "heating", "warm", "cold", "degrees"),
    "media_player": ("tv", "music", "play", "pause", "volume", "song", "track", "skip"),
    "fan": ("fans",),
    "vacuum": ("clean", "cleaning", "hoover", "robot"),
    "valve": ("water", "open", "close"),
    "weather": ("weather", "forecast", "rain", "sunny"),
    "todo": ("list", "add"),
    "person": ("home", "where", "who"),
    "scene": ("mode",),
    "script": ("run", "mode"),
}
_NAME, _ALIAS, _AREA, _KIND, _HERE = 3.0, 2.5, 1.5, 1.0, 1.0


def words(text: str) -> list[str]:
    # one-letter pieces ("what's" -> "s") would match any name that has them
    return [_stem(w) for w in _WORD.findall(text.casefold()) if len(w) > 1]


def _stem(word: str) -> str:
    # plural only: "lights" -> "light", "blinds" -> "blind"; keeps short words ("gas") intact
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _overlap(request: set[str], field: list[str]) -> float:
    """Share of the field's words found in the request (a typo of 5+ letters still counts)."""
    if not field:
        return 0.0
    hits = sum(1 for w in field if w in request or _fuzzy_in(w, request))
    return hits / len(field)


def _fuzzy_in(word: str, request: set[str]) -> bool:
    return len(word) >= 5 and any(
        len(r) >= 5 and SequenceMatcher(None, word, r).ratio() >= 0.85 for r in sorted(request)
    )


def _score(entity: Entity, request: set[str], inventory: Inventory, here: str | None) -> float:
    area = inventory.area_by_id(entity.area)
    kind = [entity.domain, *(entity.device_class or "").split("_")]
    kind_words = {_stem(w) for w in kind + list(_SYNONYMS.get(entity.domain, ()))}
    score = _NAME * _overlap(request, words(entity.name))
    score += max((_ALIAS * _overlap(request, words(a)) for a in entity.aliases), default=0.0)
    if area is not None:
        score += _AREA * _overlap(request, words(area.name))
        floor = inventory.floor_by_id(area.floor)
        score += _AREA * 0.5 * _overlap(request, words(floor.name)) if floor else 0.0
    score += _KIND * min(1.0, len(kind_words & request) / 2)
    # the speaker's own area only breaks ties among entities the words already point at
    if score > 0 and here is not None and entity.area == here:
        score += _HERE
    return score


def retrieve(
    request: str, inventory: Inventory, area: str | None = None, k: int = DEFAULT_K
) -> list[Entity]:
    """The k entities that best match the request, best first (ties by name, then id)."""
    request_words = set(words(request))
    here = next(
        (a.id for a in inventory.areas if area and a.name.casefold() == area.casefold()), None
    )
    scored = [(_score(e, request_words, inventory, here), e) for e in inventory.entities]
    ranked = sorted(
        (s for s in scored if s[0] > 0), key=lambda s: (-round(s[0], 6), s[1].name, s[1].id)
    )
    return [e for _, e in ranked[:k]]


def describe(entity: Entity, inventory: Inventory) -> str:
    """One entity as one line: `- Curtain Left (cover curtain, Living Room): open`.

    Names and states are the home's data, not instructions, and may hold anything (a media
    title, a text sensor): line breaks are folded so they cannot forge lines of the block."""
    kind = f"{entity.domain} {entity.device_class}" if entity.device_class else entity.domain
    where = inventory.area_name(entity.area)
    unit = entity.attributes.get("unit_of_measurement")
    state = f"{entity.state} {unit}" if unit and entity.state else entity.state
    line = f"- {entity.name} ({kind}{', ' + where if where else ''}): {state or 'unknown'}"
    return " ".join(line.split())


def context_block(request: str, area: str | None, inventory: Inventory, k: int = DEFAULT_K) -> str:
    """The prompt's home context: the speaker's area and the entities the request is about."""
    lines = [f"Speaker area: {area or 'unknown'}", "Devices:"]
    found = retrieve(request, inventory, area, k)
    lines += [describe(e, inventory) for e in found] or ["- none match"]
    return "\n".join(lines)
