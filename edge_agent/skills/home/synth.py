"""Commands for synthetic homes from Home Assistant's own sentence templates, with gold calls.

Each command is one template of `home-assistant-intents` (hassil syntax) expanded at random over
one home's slot lists (its devices, areas and floors, as Home Assistant builds them), and
labelled by hassil itself: the expanded sentence is recognized against that template's block,
and the recognized slots are the gold call's arguments. Templates are split too, by a hash of
their text: the held-out phrasings are never used for training. A second source is the
MIT-licensed home-llm corpus (`home_llm.py`). Host-side: needs the `host` extra (hassil).

    from edge_agent.skills.home import synth
    rows = synth.training_rows(seed=0, n=4000)  # train homes x train templates: Record fields
    parts = synth.split()                       # the four generalization sets, as Commands
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from edge_agent.skills.home.dataset import intent_definitions, load_split, sentence_key, slot_order
from edge_agent.skills.home.homes import home, home_ids
from edge_agent.skills.home.inventory import Inventory
from edge_agent.skills.home.retrieve import context_block
from edge_agent.skills.home.simulated import SimulatedHome
from edge_agent.skills.home.toolset import parameters
from edge_agent.types import ToolCall

if TYPE_CHECKING:
    from hassil.expression import Expression, Sentence
    from hassil.intents import IntentData, Intents, SlotList

Part = Literal["train", "heldout"]
HELDOUT_TEMPLATE_SHARE = 5  # one template in five is held out
_WILDCARDS: dict[str, tuple[str, ...]] = {
    "shopping_list_item": ("milk", "eggs", "bread", "apples", "coffee beans", "dish soap",
                           "paper towels", "oat milk", "batteries", "cat food", "tomatoes"),
    "todo_list_item": ("call the plumber", "water the plants", "pay rent", "buy a gift",
                       "clean the gutters", "book flights", "walk the dog", "return library books"),
    "timer_name": ("pizza", "pasta", "laundry", "tea", "bread", "cookies", "nap"),
    "timer_command": ("turn off the oven", "turn on the porch light", "open the blinds"),
    "message": ("dinner is ready", "time for bed", "we are leaving in five minutes",
                "the laundry is done", "come downstairs please"),
    "zone": ("work", "school", "the gym"),
}  # fmt: skip


class Command(BaseModel):
    """One spoken command in one home, with its gold call: what the evaluators take."""

    model_config = ConfigDict(frozen=True)

    id: str
    sentence: str
    intent: str
    slots: dict[str, Any]
    home: str  # a homes.home() id
    area: str | None = None  # the speaker's area
    template: str = ""  # the template id (or source tag) it came from

    @property
    def speaker_area(self) -> str | None:
        return self.area

    def inventory(self) -> Inventory:
        return _home(self.home).model_copy(deep=True)

    def call(self) -> ToolCall:
        order = slot_order(self.intent)
        names = sorted(self.slots, key=lambda s: (order.index(s) if s in order else len(order), s))
        return ToolCall(name=self.intent, arguments={s: self.slots[s] for s in names})


@cache
def _home(home_id: str) -> Inventory:
    return home(home_id)


# --- templates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    id: str  # sha256 of intent and text, 12 hex digits
    intent: str
    block: int  # index of its data block in the intent
    text: str

    @property
    def part(self) -> Part:
        return "heldout" if int(self.id, 16) % HELDOUT_TEMPLATE_SHARE == 0 else "train"


@cache
def _intents() -> Intents:
    from hassil.intents import Intents
    from home_assistant_intents import get_intents

    return Intents.from_dict(get_intents("en"))


@cache
def templates() -> tuple[Template, ...]:
    """Every English template of the intents the home toolset has, in a stable order."""
    found = []
    for name, intent in sorted(_intents().intents.items()):
        if name not in intent_definitions():
            continue
        for block, data in enumerate(intent.data):
            for text in data.sentence_texts:
                digest = hashlib.sha256(f"{name}:{text}".encode()).hexdigest()[:12]
                found.append(Template(digest, name, block, text))
    return tuple(found)


def templates_of(part: Part) -> list[Template]:
    """A part of the template split; an intent with one template keeps it for training."""
    counts: dict[str, int] = {}
    for t in templates():
        counts[t.intent] = counts.get(t.intent, 0) + 1
    return [t for t in templates() if (t.part if counts[t.intent] > 1 else "train") == part]


# --- a home's slot lists, as Home Assistant builds them --------------------------------------


def slot_lists(inventory: Inventory) -> dict[str, SlotList]:
    """name / area / floor lists; a name's context carries its domain and device class, which
    templates check with requires_context. Values are the words said (aliases included)."""
    from hassil.intents import TextSlotList

    names = []
    for e in inventory.entities:
        context = {"domain": e.domain} | (
            {"device_class": e.device_class} if e.device_class else {}
        )
        names += [(n, n, context) for n in (e.name, *e.aliases)]
    areas = [(n, n) for a in inventory.areas for n in (a.name, *a.aliases)]
    floors = [(n, n) for f in inventory.floors for n in (f.name, *f.aliases)]
    return {
        "name": TextSlotList.from_tuples(names, allow_template=False, name="name"),
        "area": TextSlotList.from_tuples(areas, allow_template=False, name="area"),
        "floor": TextSlotList.from_tuples(floors, allow_template=False, name="floor"),
    }


# --- one command from one template ----------------------------------------------------------


def command(template: Template, home_id: str, rng: random.Random) -> Command | None:
    """The template expanded once over the home, labelled by hassil; None when the sampled
    sentence does not parse back (a name of the wrong domain, a list the home lacks)."""
    from hassil.util import normalize_whitespace

    inventory = _home(home_id)
    data = _intents().intents[template.intent].data[template.block]
    lists = {**_intents().slot_lists, **data.slot_lists, **slot_lists(inventory)}
    lists["name"] = _fitting_names(lists["name"], data)
    rules = {**_intents().expansion_rules, **data.expansion_rules}
    sentence = _sentence(template.text)
    try:
        text = normalize_whitespace(_expand(sentence, rng, rules, lists)).strip()
    except (KeyError, IndexError):  # a list this home has no values for
        return None
    area = rng.choice(inventory.areas).name if inventory.areas and rng.random() < 0.7 else None
    slots = _recognize(text, template, data, lists, area)
    if slots is None or not _fits_schema(template.intent, slots):
        return None
    cid = hashlib.sha256(f"{template.id}:{home_id}:{text}:{area}".encode()).hexdigest()[:12]
    return Command(id=cid, sentence=text, intent=template.intent, slots=slots, home=home_id,
                   area=area, template=template.id)  # fmt: skip


@cache
def _sentence(text: str) -> Sentence:
    from hassil.parse_expression import parse_sentence

    return parse_sentence(text, keep_text=True)


def _fitting_names(names: SlotList, data: IntentData) -> SlotList:
    """Only names whose context the block accepts: most samples then parse back."""
    from hassil.intents import TextSlotList

    assert isinstance(names, TextSlotList)
    kept = [v for v in names.values if _context_ok(v.context or {}, data)]
    return TextSlotList(name="name", values=kept or names.values)


def _context_ok(context: dict[str, Any], data: IntentData) -> bool:
    for key, wanted in (data.requires_context or {}).items():
        if key in ("domain", "device_class") and isinstance(wanted, str | list):
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if context.get(key) not in allowed:
                return False
    for key, unwanted in (data.excludes_context or {}).items():
        banned = unwanted if isinstance(unwanted, list) else [unwanted]
        if context.get(key) in banned:
            return False
    return True


def _expand(expr: Expression, rng: random.Random, rules: dict[str, Any], lists: dict) -> str:
    """One random sentence of an expression (hassil's sampler enumerates them all)."""
    from hassil.expression import ListReference, RuleReference, Sequence, SequenceType, TextChunk

    if isinstance(expr, TextChunk):
        return expr.original_text or expr.text
    if isinstance(expr, Sequence):
        if expr.type == SequenceType.ALTERNATIVE:
            return _expand(rng.choice(expr.items), rng, rules, lists)
        items = list(expr.items)
        if expr.type == SequenceType.PERMUTATION:
            rng.shuffle(items)
            return " ".join(_expand(i, rng, rules, lists) for i in items)
        return "".join(_expand(i, rng, rules, lists) for i in items)
    if isinstance(expr, RuleReference):
        return _expand(rules[expr.rule_name], rng, rules, lists)
    if isinstance(expr, ListReference):
        return _list_value(expr.list_name, rng, rules, lists)
    raise TypeError(f"unexpected hassil expression {expr!r}")


def _list_value(name: str, rng: random.Random, rules: dict[str, Any], lists: dict) -> str:
    from hassil.intents import RangeSlotList, TextSlotList, WildcardSlotList

    slot_list = lists[name]
    if isinstance(slot_list, TextSlotList):
        return _expand(rng.choice(slot_list.values).text_in, rng, rules, lists)
    if isinstance(slot_list, RangeSlotList):
        number = rng.choice(list(slot_list.get_numbers()))
        return _number_text(number, rng)
    if isinstance(slot_list, WildcardSlotList):
        return rng.choice(_WILDCARDS.get(name, ("something",)))
    raise TypeError(f"unexpected slot list {slot_list!r}")


def _number_text(number: float, rng: random.Random) -> str:
    if rng.random() < 0.75 or number != int(number):
        return str(number)
    return _words(int(number))


@cache
def _rbnf() -> Any:
    from unicode_rbnf import RbnfEngine

    return RbnfEngine.for_language("en")


def _words(number: int) -> str:
    result = _rbnf().format_number(number)
    return str(next(iter(sorted(set(result.text_by_ruleset.values())))))


def _recognize(
    text: str, template: Template, data: IntentData, lists: dict, area: str | None
) -> dict[str, Any] | None:
    from hassil.intents import Intent, Intents
    from hassil.recognize import recognize_best

    base = _intents()
    one = Intents(language="en", intents={template.intent: Intent(template.intent, [data])},
                  slot_lists=base.slot_lists, expansion_rules=base.expansion_rules,
                  skip_words=base.skip_words, settings=base.settings)  # fmt: skip
    context = {"area": {"value": area, "text": area}} if area else None
    # the best parse, as Home Assistant picks it: most literal text, so a wildcard ("pause my
    # timer") does not swallow words a template spells out
    result = recognize_best(text, one, slot_lists=lists, intent_context=context, language="en")
    return None if result is None else {e.name: _value(e.value) for e in result.entities_list}


def label(sentence: str, intent: str, inventory: Inventory, area: str | None = None) -> dict | None:
    """The slots hassil recognizes in `sentence` for `intent` in this home (any of its blocks),
    or None: how every synthetic command gets its gold call."""
    base = _intents()
    lists = {**base.slot_lists, **slot_lists(inventory)}
    for block, data in enumerate(base.intents[intent].data):
        template = Template("0", intent, block, "")
        slots = _recognize(sentence, template, data, {**lists, **data.slot_lists}, area)
        if slots is not None:
            return slots
    return None


def _value(value: Any) -> Any:
    if isinstance(value, float) and value == int(value):
        return int(value)
    return value.strip() if isinstance(value, str) else value


def _fits_schema(intent: str, slots: dict[str, Any]) -> bool:
    """Every slot is an argument of the tool, of an allowed value, and the required are there."""
    schema = parameters(intent)
    props = schema["properties"]
    for key, value in slots.items():
        prop = props.get(key)
        if prop is None or ("enum" in prop and value not in prop["enum"]):
            return False
        if prop.get("type") == "integer" and not isinstance(value, int):
            return False
    return all(r in slots for r in schema["required"])


# --- sets of commands -----------------------------------------------------------------------


def commands(
    homes: Sequence[str], part: Part, n: int, seed: int = 0, *, max_tries: int = 8
) -> list[Command]:
    """About n commands: templates of `part` (an intent drawn by its template count to the
    0.6th power, so rare intents get a share and common ones the most), each in a random home
    of `homes`; no sentence of the HA test or validation split, and only commands whose gold
    call succeeds in their home."""
    rng = random.Random(seed)
    by_intent: dict[str, list[Template]] = {}
    for t in templates_of(part):
        by_intent.setdefault(t.intent, []).append(t)
    names = sorted(by_intent)
    weights = [len(by_intent[i]) ** 0.6 for i in names]
    banned = _ha_heldout_sentences()
    found: dict[str, Command] = {}
    for _ in range(n * max_tries):
        if len(found) >= n:
            break
        intent = rng.choices(names, weights)[0]
        made = command(rng.choice(by_intent[intent]), rng.choice(homes), rng)
        if made and sentence_key(made.sentence) not in banned and runs(made):
            found.setdefault(sentence_key(made.sentence) + made.home, made)
    return list(found.values())


@cache
def _ha_heldout_sentences() -> frozenset[str]:
    return frozenset(sentence_key(r.sentence) for p in ("test", "validation")
                     for r in load_split(p))  # fmt: skip


def runs(cmd: Command) -> bool:
    """The gold call succeeds on a fresh copy of the command's home (a label that fails, e.g.
    a name two devices share, would teach nothing)."""
    from edge_agent.skills.home.state_score import execute

    return execute(cmd.call(), cmd.inventory(), cmd.speaker_area).ok


def split(seed: int = 0, n: int = 200) -> dict[str, list[Command]]:
    """The generalization sets: held-out homes x train templates, train homes x held-out
    templates, held-out homes x held-out templates; `n` commands each."""
    train, held = home_ids("train"), home_ids("heldout")
    return {
        "heldout_homes": commands(held, "train", n, seed + 1),
        "heldout_templates": commands(train, "heldout", n, seed + 2),
        "heldout_both": commands(held, "heldout", n, seed + 3),
    }


def record(cmd: Command) -> dict[str, Any]:
    """A command as the fields of the flywheel's training record (`host.curate.Record`), with
    the context block the device appends for its home (the simulated home's view: its
    shopping list included). A dict, because the skills layer may not import the host."""
    view = SimulatedHome(cmd.inventory()).inventory
    return {"id": f"synth-{cmd.id}", "request": cmd.sentence, "area": cmd.area,
            "context": context_block(cmd.sentence, cmd.area, view), "call": cmd.call(),
            "route": "escalated", "skill": "home"}  # fmt: skip


def training_commands(seed: int = 0, n: int = 4000, home_llm_share: float = 0.2) -> list[Command]:
    """Train homes x train templates, plus a share of home-llm commands over train homes."""
    from edge_agent.skills.home.home_llm import home_llm_commands

    extra = int(n * home_llm_share)
    ours = commands(home_ids("train"), "train", n - extra, seed)
    return ours + home_llm_commands(home_ids("train"), extra, seed)


def training_rows(seed: int = 0, n: int = 4000) -> list[dict[str, Any]]:
    """The one call for trainers: about `n` training rows (request + context block + gold
    call), each `Record.model_validate(row)`-ready."""
    return [record(c) for c in training_commands(seed, n)]
