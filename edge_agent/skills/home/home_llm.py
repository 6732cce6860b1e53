"""Commands from the home-llm synthetic corpus (MIT, Copyright 2024 Alex O'Connell;
https://github.com/acon96/home-llm `data/piles/english`, copied to ../shared/data/home_llm):
its templated actions and status requests, filled with a synthetic home's own devices.

Another way of speaking than HA's templates ("Can you make <device> blue?", "Is the <device>
on"). Its services map onto HA intents: turn_on/open_cover/lock → HassTurnOn, turn_off/
close_cover/unlock → HassTurnOff, brightness and color → HassLightSet, media and vacuum services
→ their intents, status questions → HassGetState. Services with no intent (toggle, stop_cover,
fan speed, mute, hvac mode) are skipped.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from edge_agent.skills.home.homes import home
from edge_agent.skills.home.inventory import Entity

SOURCE_TAG = "home_llm"
_COLORS = ("white", "red", "orange", "yellow", "green", "blue", "purple", "pink")
# (pile device type, service) -> intent
_INTENTS = {
    **{(d, "turn_on"): "HassTurnOn" for d in ("light", "switch", "fan")},
    **{(d, "turn_off"): "HassTurnOff" for d in ("light", "switch", "fan")},
    **{(d, "open_cover"): "HassTurnOn" for d in ("blinds", "garage_door")},
    **{(d, "close_cover"): "HassTurnOff" for d in ("blinds", "garage_door")},
    ("lock", "lock"): "HassTurnOn", ("lock", "unlock"): "HassTurnOff",
    ("media_player", "media_pause"): "HassMediaPause",
    ("media_player", "media_play"): "HassMediaUnpause",
    ("media_player", "media_next_track"): "HassMediaNext",
    ("media_player", "media_previous_track"): "HassMediaPrevious",
    ("vacuum", "start"): "HassVacuumStart",
    ("vacuum", "return_to_base"): "HassVacuumReturnToBase",
    ("todo", "add_item"): "HassListAddItem",
}  # fmt: skip
_STATE_WORDS = ("on", "off", "open", "closed", "locked", "unlocked")


def piles_dir() -> Path:
    """Where the piles are: $EDGE_AGENT_HOME_LLM or ../shared/data/home_llm beside the repo."""
    env = os.environ.get("EDGE_AGENT_HOME_LLM")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "shared/data/home_llm/data/piles/english"


@cache
def _pile(name: str) -> tuple[dict[str, str], ...]:
    path = piles_dir() / name
    if not path.exists():
        return ()
    with path.open(encoding="utf-8", newline="") as f:
        return tuple(csv.DictReader(f))


@cache
def _todo_items() -> tuple[str, ...]:
    path = piles_dir() / "pile_of_todo_items.txt"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return tuple(line.strip() for line in lines if line.strip()) or ("milk",)


def _fits(kind: str, entity: Entity) -> bool:
    cls = entity.device_class
    if kind == "blinds":
        return entity.domain == "cover" and cls in ("blind", "shade", "curtain", "window")
    if kind == "garage_door":
        return entity.domain == "cover" and cls in ("garage", "gate", "door")
    return entity.domain == kind


def phrases() -> list[tuple[str, str, str]]:
    """(device type, intent, phrase) of the piles' single-device requests we can label."""
    found = []
    for row in _pile("pile_of_templated_actions.csv"):
        kind, service, phrase = row["device_type"], row["service"], row["phrase"]
        if "|" in kind or "<device_name>" not in phrase:
            continue
        intent = _INTENTS.get((kind, service))
        if "<brightness>" in phrase or "<color>" in phrase:
            intent = "HassLightSet"
        if intent and not any(f"<{p}>" in phrase for p in ("temp_f", "temp_c", "duration")):
            found.append((kind, intent, phrase))
    for row in _pile("pile_of_status_requests.csv"):
        if "<device_name>" in row["phrase"] and ";" not in row["state"]:
            found.append((row["device_type"], "HassGetState", row["phrase"]))
    return found


def home_llm_commands(homes: Sequence[str], n: int, seed: int = 0) -> list[Any]:
    """About n commands from the piles' phrasings over random homes of `homes`."""
    from edge_agent.skills.home.synth import Command, runs

    rng = random.Random(seed)
    pool = phrases()
    made: dict[str, Command] = {}
    for _ in range(n * 4 if pool else 0):
        if len(made) >= n:
            break
        kind, intent, phrase = rng.choice(pool)
        home_id = rng.choice(homes)
        devices = [e for e in home(home_id).entities if _fits(kind, e)]
        if not devices:
            continue
        sentence, slots = _fill(phrase, intent, rng.choice(devices), rng)
        cid = hashlib.sha256(f"{SOURCE_TAG}:{home_id}:{sentence}".encode()).hexdigest()[:12]
        cmd = Command(id=cid, sentence=sentence, intent=intent, slots=slots, home=home_id,
                      template=SOURCE_TAG)  # fmt: skip
        if runs(cmd):
            made.setdefault(sentence.casefold() + home_id, cmd)
    return list(made.values())


def _fill(phrase: str, intent: str, entity: Entity, rng: random.Random) -> tuple[str, dict]:
    slots: dict[str, Any] = {"name": entity.name}
    text = phrase.replace("<device_name>", entity.name)
    if "<brightness>" in text:
        slots["brightness"] = rng.choice([10, 20, 25, 40, 50, 75, 80, 100])
        text = text.replace("<brightness>", str(slots["brightness"]))
    if "<color>" in text:
        slots["color"] = rng.choice(_COLORS)
        text = text.replace("<color>", slots["color"])
    if "<todo>" in text:
        slots["item"] = rng.choice(_todo_items())
        text = text.replace("<todo>", slots["item"])
    if intent == "HassGetState":
        said = [w for w in _STATE_WORDS if f" {w}" in f" {text.casefold().rstrip('?.!')} "]
        asks = text.casefold().startswith(("is ", "are ")) and " or " not in text
        if said and asks:
            slots["state"] = said[-1]
    return text.strip(), slots
