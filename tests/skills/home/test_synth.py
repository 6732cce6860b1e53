"""Commands from HA's sentence templates over synthetic homes, labelled by hassil."""

from collections import Counter
from pathlib import Path

from edge_agent.host.curate import Record
from edge_agent.skills.home import synth
from edge_agent.skills.home.dataset import intent_definitions, load_rows, load_split, sentence_key
from edge_agent.skills.home.home_llm import home_llm_commands, phrases
from edge_agent.skills.home.homes import home, home_ids
from edge_agent.skills.home.retrieve import context_block
from edge_agent.skills.home.score import call_matches
from edge_agent.skills.home.simulated import SimulatedHome
from edge_agent.skills.home.state_score import execute
from edge_agent.skills.home.toolset import parameters
from edge_agent.types import ToolCall


def test_templates_split_into_disjoint_parts_and_every_intent_keeps_training_phrasings():
    train, held = synth.templates_of("train"), synth.templates_of("heldout")
    assert not {t.id for t in train} & {t.id for t in held}
    assert 0.1 < len(held) / (len(train) + len(held)) < 0.3
    assert {t.intent for t in train} == set(intent_definitions())  # every tool can be learned


def test_hassil_labels_agree_with_home_assistants_own_tests():
    # the labelling, checked where the answer is known: HA's test sentences in their homes
    rows = load_rows()[::7]
    labelled = [(r, synth.label(r.sentence, r.intent, r.inventory(), r.speaker_area)) for r in rows]
    agree = [
        call_matches(r.call().arguments, r.intent, ToolCall(name=r.intent, arguments=slots))
        for r, slots in labelled
        if slots is not None
    ]
    assert len(agree) > 0.9 * len(rows)
    assert sum(agree) > 0.97 * len(agree)


def test_commands_are_valid_calls_that_run_in_their_own_home():
    cmds = synth.commands(home_ids("train"), "train", 30, seed=3)
    assert len(cmds) == 30
    banned = {sentence_key(r.sentence) for p in ("test", "validation") for r in load_split(p)}
    train_templates = {t.id for t in synth.templates_of("train")}
    for cmd in cmds:
        assert cmd.home in home_ids("train") and cmd.template in train_templates
        assert sentence_key(cmd.sentence) not in banned
        assert set(cmd.slots) <= set(parameters(cmd.intent)["properties"])
        assert execute(cmd.call(), cmd.inventory(), cmd.area, cmd.sentence).ok
    assert len(Counter(c.intent for c in cmds)) >= 10
    assert synth.commands(home_ids("train"), "train", 30, seed=3) == cmds  # seedable


def test_names_in_commands_are_the_homes_own():
    for cmd in synth.commands(home_ids("heldout"), "heldout", 20, seed=1):
        inventory = home(cmd.home)
        said = {n for e in inventory.entities for n in (e.name, *e.aliases)}
        if "name" in cmd.slots and "Timer" not in cmd.intent:  # a timer's name is its own
            assert cmd.slots["name"] in said | {"all"}, cmd  # HA's "all the lights": name all


def test_split_keeps_heldout_homes_and_heldout_templates_apart():
    parts = synth.split(seed=0, n=8)
    held, train = set(home_ids("heldout")), set(home_ids("train"))
    held_templates = {t.id for t in synth.templates_of("heldout")}
    assert all(c.home in held and c.template not in held_templates for c in parts["heldout_homes"])
    assert all(c.home in train and c.template in held_templates for c in parts["heldout_templates"])
    assert all(c.home in held and c.template in held_templates for c in parts["heldout_both"])


def test_training_rows_carry_the_context_block_the_device_builds():
    cmds = synth.training_commands(seed=0, n=10)
    rows = synth.training_rows(seed=0, n=10)
    assert len(rows) == len(cmds) >= 8
    assert any(c.template == "home_llm" for c in cmds)
    for cmd, row in zip(cmds, rows, strict=True):
        record = Record.model_validate(row)
        view = SimulatedHome(home(cmd.home)).inventory
        assert record.request == cmd.sentence and record.call is not None
        assert (record.call.name, record.call.arguments) == (cmd.intent, cmd.call().arguments)
        assert record.context == context_block(cmd.sentence, cmd.area, view)


def test_home_llm_phrasings_fill_a_home_own_devices():
    assert len(phrases()) > 100
    cmds = home_llm_commands(home_ids("train"), 15, seed=2)
    assert len(cmds) == 15
    for cmd in cmds:
        names = {e.name for e in home(cmd.home).entities}
        assert cmd.slots["name"] in names and cmd.slots["name"] in cmd.sentence
        assert execute(cmd.call(), cmd.inventory()).ok


def test_handwritten_benchmark_commands_run_in_a_heldout_home():
    path = Path(__file__).resolve().parents[3] / "scripts/bench/data/home_handwritten.jsonl"
    cmds = [synth.Command.model_validate_json(line) for line in path.read_text().splitlines()]
    assert len(cmds) >= 50
    sentences = {c.sentence for c in cmds}
    assert {"put milk on my shopping list", "cancel every timer"} <= sentences
    for cmd in cmds:
        assert cmd.home in home_ids("heldout")
        assert execute(cmd.call(), cmd.inventory(), cmd.area, cmd.sentence).ok, cmd.sentence
