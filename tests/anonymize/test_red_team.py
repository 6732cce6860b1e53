"""Issue 13, finding 11: names and postcodes that left the device in clear through sync, and
the tool names the anonymizer must not take for names."""

from __future__ import annotations

import re

import pytest

from edge_agent.anonymize import Anonymizer
from edge_agent.settings import Settings
from edge_agent.skills import keep_words
from edge_agent.sync import device_anonymizer, redact, wire
from edge_agent.sync.redact import Scrubber
from edge_agent.types import AgentResult, Effect, Interaction, Message, ToolCall, ToolOutcome

SECRET = b"test-secret-0123456789abcdef"

# (what the user said, the words that must not leave in clear)
RED_TEAM = [
    ("call Maria at +1 650-253-0000", ["Maria", "650"]),
    ("send 500 dollars to Will Turner", ["Will", "Turner"]),
    ("my postcode is SW1A 1AA", ["SW1A", "1AA"]),
    ("I live at 10 Downing Street, London SW1A 2AA", ["Downing", "SW1A", "2AA"]),
    ("call maria at 650 253 0000", ["maria"]),
    ("send 500 dollars to will turner", ["will", "turner"]),
]


@pytest.fixture(scope="module")
def anon() -> Anonymizer:
    return Anonymizer(SECRET, keep_words())


def turn(text: str) -> Interaction:
    """A turn that carries `text` in every free-text field sync scrubs."""
    call = ToolCall(name="HassBroadcast", arguments={"message": text, "area": "Kitchen"})
    outcome = ToolOutcome(call=call, effect=Effect.ACTUATING, status="ok", result={"said": text})
    result = AgentResult(request=text, answer=f"Done: {text}", tool_calls=[outcome], model="m")
    messages = [
        Message(role="system", content="Tools: HassBroadcast, HassTurnOn, HassTimerStatus."),
        Message(role="user", content=text),
        Message(role="assistant", content='{"name":"HassBroadcast","arguments":{}}'),
        Message(role="tool", name="HassBroadcast", content='{"success": true}'),
    ]
    return Interaction(result=result, messages=messages, recorded_at=1_750_000_000.0)


def sent(scrubber: Scrubber, item: Interaction) -> str:
    return wire.encode_record(redact(item, scrubber)).decode()


@pytest.mark.parametrize(("text", "personal"), RED_TEAM)
def test_red_team_sentences_never_leave_in_clear(text: str, personal: list[str]) -> None:
    """Through the sync path itself: the device's anonymizer, redact, the wire encoding."""
    out = sent(device_anonymizer(Settings(), keep_words()), turn(text))
    for word in personal:
        assert not re.search(rf"\b{word}\b", out), (word, out)


def test_tool_names_survive_the_sync_path(anon: Anonymizer) -> None:
    out = sent(anon, turn("turn on the kitchen light"))
    assert out.count("HassBroadcast") == 4 and "HassTimerStatus" in out and "<PERSON_" not in out
    assert '"area":"Kitchen"' in out and "turn on the kitchen light" in out


NAMES = [
    ("call Maria at +1 650-253-0000", "Maria"),
    ("send 500 dollars to Will Turner", "Will Turner"),
    ("text Maria that I'm late", "Maria"),
    ("remind Will to buy milk", "Will"),
    ("email John about dinner", "John"),
    ("Call Mark and tell him the door is open", "Mark"),
    ("ask Peter to feed the cat", "Peter"),
    ("call maria gonzalez now", "maria gonzalez"),
    ("text xiomara that dinner is ready", "xiomara"),
    ("remind tom to take out the trash", "tom"),
    ("send 20 dollars to will turner", "will turner"),
    ("Calling Maria now.", "Maria"),
    ("Texting Will Turner that you are late.", "Will Turner"),
    ("calling tom now", "tom"),
    ("call Ronald McDonald", "Ronald McDonald"),
    ("text DeShawn when the door opens", "DeShawn"),
]


@pytest.mark.parametrize(("text", "name"), NAMES)
def test_names_after_contact_verbs(anon: Anonymizer, text: str, name: str) -> None:
    people = [f.value for f in anon.findings(text) if f.type == "PERSON"]
    assert people == [name], anon.findings(text)


POSTCODES = [
    ("my postcode is SW1A 1AA", "SW1A 1AA"),
    ("ship it to M1 1AE please", "M1 1AE"),
    ("post code: ec1a 1bb", "ec1a 1bb"),
    ("the office, DN55 1PT, is closed", "DN55 1PT"),
    ("ship to B33 8TH", "B33 8TH"),
]


@pytest.mark.parametrize(("text", "postcode"), POSTCODES)
def test_a_uk_postcode_is_one_span(anon: Anonymizer, text: str, postcode: str) -> None:
    assert [(f.type, f.value) for f in anon.findings(text)] == [("ADDRESS", postcode)]


def test_a_uk_postcode_ends_the_address_it_follows(anon: Anonymizer) -> None:
    text = "I live at 10 Downing Street, London SW1A 2AA. Turn on the light"
    (found,) = anon.findings(text)
    assert found.type == "ADDRESS" and found.value == "10 Downing Street, London SW1A 2AA"


HOME = [
    "tell me the time",
    "remind me to water the plants in May",
    "set the light to amber",
    "text me when the washer is done",
    "send the vacuum to the kitchen",
    "Will you turn on the Overhead Light?",
    "from May to June",
    "call the kitchen speaker",
    "email me the weather report",
    "ask Alexa to play Bohemian Rhapsody",
    "Tools: HassTurnOn, HassTurnOff, HassClimateSetTemperature, HassMediaSearchAndPlay",
    '{"name":"HassTimerStatus","arguments":{"area":"Living Room"}}',
    "set the Living Room to 21 degrees and turn off the Garage Light",
    "turn off the TV at 10 PM",
    "copy it to the M2 2TB drive",
    "You're welcome! They're both off now.",
    "turn on the Walk-In Closet light and the Sony soundbar in the Sunroom",
]


@pytest.mark.parametrize("text", HOME)
def test_home_requests_and_tool_names_are_left_alone(anon: Anonymizer, text: str) -> None:
    assert anon.scrub(text) == text, anon.findings(text)


def test_a_tool_message_keeps_its_tool_name_a_user_message_does_not(anon: Anonymizer) -> None:
    item = turn("hi").model_copy(
        update={
            "messages": [
                Message(role="tool", name="Zorblax", content="21.5 C"),
                Message(role="user", name="Maria Garcia", content="hi"),
            ]
        }
    )
    tool, user = redact(item, anon).messages
    assert tool.name == "Zorblax" and user.name == anon.tag("PERSON", "Maria Garcia")
