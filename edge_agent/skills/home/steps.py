"""A home request that asks for several things, as the steps it asks for (`Toolset.split`).

Home Assistant's intents take one target per call (one name, one area, one floor), and the
home adapter was trained on single calls, so "turn on the kitchen light and then lock the
front door" and "turn on the kitchen and living room lights" are each two steps:

- clauses: a sequencing word ("and then", ", then", "then", "after that", "and also", ";",
  a sentence end) or an "and" / comma before a command verb, or a command verb right after
  a name the home knows ("turn off the fan close the blinds"); every clause must start with
  a command and say more than its verb, and a later clause that points back ("set it to
  50 %") keeps the request whole;
- targets: one verb over coordinated names, areas or floors the home knows ("lock the front
  and back doors", "the lights in the kitchen and the hallway"), or over device kinds ("the
  lights and the fans"); anything else joined by "and" is one target ("add milk and eggs to
  the shopping list", "set the lights to red and blue", a name with "and" in it).

Rules, not a grammar or a parser: HA's own templates (hassil) match one target per sentence
and only their own wording, and a dependency parser is too heavy for a device. Microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from edge_agent.skills.home.inventory import Inventory
from edge_agent.skills.home.retrieve import words

_TOKEN = re.compile(r"[^\s,;]+|[,;]")


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_COMMANDS = _set(
    "turn switch power set open close shut lock unlock dim brighten raise lower lift start stop "
    "pause resume unpause play skip add put cancel activate deactivate toggle mute unmute "
    "increase decrease what is are how tell check run enable disable flip kill change adjust "
    "arm disarm"
)
# verbs that start a new clause even with no "and" before them, right after a known name
_BARE = _set(
    "turn switch open close shut lock unlock set dim activate deactivate toggle raise lower "
    "start stop flip"
)
_PARTICLES = frozenset({"on", "off", "up", "down"})
_DEVICES = frozenset(
    words(
        "light lights lamp lamps switch switches fan fans door doors lock locks blind blinds "
        "curtain curtains shade shades shutter shutters window windows cover covers tv speaker "
        "thermostat heater valve garage outlet plug plugs"
    )
)
_DETERMINERS = frozenset({"the", "my", "our", "all"})
_LEADS = frozenset({"please", "also", "now", "and"})
_CONNECTORS = frozenset({";", ",", "and", "then", "also", "after", "that"})
_POINTERS = frozenset({"it", "them", "they", "its", "their", "those", "these", "that"})
_MAX_NAME = 6  # words in the longest name tried


@dataclass(frozen=True)
class _Names:
    """The home's names as word tuples (entities, devices, areas, floors, aliases)."""

    phrases: frozenset[tuple[str, ...]]

    @classmethod
    def of(cls, inventory: Inventory) -> _Names:
        texts: list[str] = []
        for e in inventory.entities:
            texts += [e.name, *e.aliases, *([e.device] if e.device else [])]
        for area in inventory.areas:
            texts += [area.name, *area.aliases]
        for floor in inventory.floors:
            texts += [floor.name, *floor.aliases]
        return cls(frozenset(tuple(words(t)) for t in texts if words(t)))

    def longest(self, keys: Sequence[str], at: int) -> int | None:
        """The end of the longest name starting at `at`, or None."""
        for end in range(min(len(keys), at + _MAX_NAME), at, -1):
            if tuple(keys[at:end]) in self.phrases:
                return end
        return None


def home_splitter(inventory: Callable[[], Inventory]) -> Callable[[str, str | None], list[str]]:
    """The home toolset's `split` hook over the home's current inventory (read each call: a
    real home's names change; the word tuples are rebuilt only when it does)."""
    seen: list[tuple[Inventory, _Names]] = []

    def split(request: str, area: str | None) -> list[str]:
        current = inventory()
        if not seen or seen[0][0] is not current:
            seen[:] = [(current, _Names.of(current))]
        return split_request(request, seen[0][1])

    return split


def split_request(request: str, names: _Names) -> list[str]:
    """The steps of `request` (itself alone when it asks for one thing)."""
    tokens = _TOKEN.findall(request)
    keys = [_key(t) for t in tokens]
    clauses = _clauses(tokens, keys, names)
    steps = [step for c in clauses for step in _distribute(tokens[c], keys[c], names)]
    return steps if len(steps) > 1 else [request]


def _key(token: str) -> str:
    found = words(token)
    return found[0] if len(found) == 1 else " ".join(found) or token.casefold()


# --- clauses ----------------------------------------------------------------------------------


def _clauses(tokens: list[str], keys: list[str], names: _Names) -> list[slice]:
    """Where the request's commands start and end; one slice when it holds one command."""
    whole = [slice(0, len(tokens))]
    if not _is_command(keys, 0):
        return whole
    cuts: list[tuple[int, int]] = []  # (end of a clause, start of the next)
    for i in range(1, len(tokens)):
        nxt = _boundary(tokens, keys, i, names)
        if nxt is not None and _is_command(keys, nxt) and (not cuts or i > cuts[-1][1]):
            cuts.append((i, nxt))
    starts = [0, *(n for _, n in cuts)]
    ends = [*(e for e, _ in cuts), len(tokens)]
    spans = [slice(s, e) for s, e in zip(starts, ends, strict=True)]
    if any(_points_back(keys[s]) for s in spans[1:]) or not all(_says_more(keys[s]) for s in spans):
        return whole
    return spans


def _boundary(tokens: list[str], keys: list[str], i: int, names: _Names) -> int | None:
    """If a clause ends before token i, where the next one starts (after its connector)."""
    k = keys[i]
    if k in (";", "then", "and", ",") or tokens[i - 1].endswith((".", "!", "?")):
        return _after_connector(keys, i)
    if k == "after" and keys[i + 1 : i + 2] == ["that"]:
        return _after_connector(keys, i)
    # a verb that ends a name ("the bedroom switch and ...") starts nothing
    if (
        k in _BARE
        and keys[i + 1 : i + 2] not in ([], ["and"], [","])
        and _ends_name(keys[:i], names)
    ):
        return i
    return None


def _after_connector(keys: list[str], at: int) -> int:
    while at < len(keys) and keys[at] in _CONNECTORS:
        at += 1
    return at


def _is_command(keys: list[str], at: int) -> bool:
    while at < len(keys) and keys[at] in _LEADS:
        at += 1
    return at < len(keys) and keys[at] in _COMMANDS


def _says_more(keys: list[str]) -> bool:
    """A clause with a target or a value, not a bare verb ("open and close the blinds")."""
    rest = [k for k in keys if k not in _LEADS and k not in (",", ";")]
    return len(rest) > 1 + (len(rest) > 1 and rest[1] in _PARTICLES)


def _points_back(keys: list[str]) -> bool:
    return any(k in _POINTERS for k in keys)


def _ends_name(keys: list[str], names: _Names) -> bool:
    if keys and keys[-1] in _DEVICES:
        return True
    return any(names.longest(keys, s) == len(keys) for s in range(max(0, len(keys) - 6), len(keys)))


# --- targets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    start: int  # its determiner, if any
    end: int
    head: tuple[str, ...] = ()  # words borrowed from the last part ("front" + "door")
    kinds: int = 0  # device words it ends with, after a name ("living room lights")
    kinded: bool = False  # it says a kind of device itself


def _distribute(tokens: list[str], keys: list[str], names: _Names) -> list[str]:
    """One clause per coordinated target the home knows; the clause itself otherwise."""
    clause = _text(tokens)
    ands = [i for i, k in enumerate(keys) if k in ("and", "&")]
    if not ands or _inside_name(keys, ands[0], names):
        return [clause]
    parts = _parts(keys, ands[0], names)
    if parts is None:
        return [clause]
    prefix = [t for t in tokens[: parts[0].start] if t.casefold() not in ("both", "either")]
    end = parts[-1].end
    suffix = tokens[end:]
    first = parts[0].start
    the = [tokens[first]] if keys[first] in _DETERMINERS else []  # "the front and back doors"
    return [
        _text([*prefix, *(the if keys[p.start] not in _DETERMINERS else []),
               *tokens[p.start : p.end], *_borrowed(tokens, p, parts[-1]), *suffix])
        for p in parts
    ]  # fmt: skip


def _borrowed(tokens: list[str], part: _Part, last: _Part) -> list[str]:
    """What a part takes from the last one: its head ("front" and "back doors"), or its
    device words ("the kitchen" and "living room lights")."""
    if part.head:
        return tokens[last.end - len(part.head) : last.end]
    return [] if part.kinded else tokens[last.end - last.kinds : last.end]


def _parts(keys: list[str], first_and: int, names: _Names) -> list[_Part] | None:
    """The coordinated targets around the first "and", or None unless all are known."""
    verb_end = 2 if keys[1:2] and keys[1] in _PARTICLES else 1
    later = _forward_parts(keys, first_and, names)
    if not later:
        return None
    heads = [tuple(keys[later[-1].end - n : later[-1].end]) for n in (1, 2)]
    before = _split_commas(keys, verb_end, first_and)
    earlier = [_backward_part(keys, before[0], names, heads)]
    earlier += [_whole_part(keys, s, names, heads) for s in before[1:]]
    if any(p is None for p in earlier):
        return None
    return [p for p in earlier if p is not None] + later


def _forward_parts(keys: list[str], at: int, names: _Names) -> list[_Part]:
    parts: list[_Part] = []
    while at < len(keys) and keys[at] in ("and", "&", ","):
        found = _target(keys, at + 1, names)
        if found is None:
            break
        parts.append(found)
        at = found.end
    return parts


def _split_commas(keys: list[str], start: int, stop: int) -> list[slice]:
    cuts = [i for i in range(start, stop) if keys[i] == ","]
    if cuts and cuts[-1] == stop - 1:  # "A, B, and C"
        stop = cuts.pop()
    bounds = [start - 1, *cuts, stop]
    return [slice(a + 1, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def _backward_part(
    keys: list[str], span: slice, names: _Names, heads: Iterable[tuple[str, ...]]
) -> _Part | None:
    """The longest known target that ends where the span ends ("the lights in | the kitchen")."""
    for s in range(span.start, span.stop):
        part = _whole_part(keys, slice(s, span.stop), names, heads)
        if part is not None:
            return part
    return None


def _whole_part(
    keys: list[str], span: slice, names: _Names, heads: Iterable[tuple[str, ...]]
) -> _Part | None:
    lead = span.start
    while lead < span.stop and keys[lead] in ("both", "either"):
        lead += 1
    found = _target(keys, lead, names) if lead < span.stop else None
    if found is not None and found.end == span.stop:
        return found
    body = _skip_determiners(keys, lead)
    for head in heads:
        if body < span.stop and tuple(keys[body : span.stop]) + head in names.phrases:
            return _Part(lead, span.stop, head)
    return None


def _target(keys: list[str], at: int, names: _Names) -> _Part | None:
    """`[determiner] [name] [device words]` at `at` (a name, device words, or both)."""
    start = _skip_determiners(keys, at)
    end = names.longest(keys, start) or start
    while end < len(keys) and keys[end] in _DEVICES:
        end += 1
    if end == start:
        return None
    kinds = 0
    while kinds < end - start - 1 and keys[end - kinds - 1] in _DEVICES:
        kinds += 1
    return _Part(at, end, kinds=kinds, kinded=any(k in _DEVICES for k in keys[start:end]))


def _skip_determiners(keys: list[str], at: int) -> int:
    while at < len(keys) and keys[at] in _DETERMINERS:
        at += 1
    return at


def _inside_name(keys: list[str], at: int, names: _Names) -> bool:
    """Whether the "and" at `at` is part of a name ("Salt and Pepper Lamp")."""
    return any(
        (end := names.longest(keys, s)) is not None and end > at
        for s in range(max(0, at - _MAX_NAME), at)
    )


def _text(tokens: Sequence[str]) -> str:
    return " ".join(tokens).replace(" ,", ",").strip(" ,;")
