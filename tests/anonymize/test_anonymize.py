"""The anonymizer's detectors: each finds its kind of personal data and leaves look-alikes."""

from __future__ import annotations

import pytest

from edge_agent.anonymize import Anonymizer, Finding
from edge_agent.anonymize.numbers import iban_ok, luhn_ok
from edge_agent.errors import ConfigError
from edge_agent.skills.home.inventory import Inventory

SECRET = b"test-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def anon() -> Anonymizer:
    return Anonymizer(SECRET, Inventory.default().keep_words())


def types(anon: Anonymizer, text: str) -> list[tuple[str, str]]:
    return [(f.type, f.value) for f in anon.findings(text)]


FOUND = [
    ("My name is John Smith.", "PERSON", "John Smith"),
    ("Hello, this is Dr. Kyle Kuefer. Who are you?", "PERSON", "Kyle Kuefer"),
    ("Szabina J Gelencsér wrote it", "PERSON", "Szabina J Gelencsér"),
    ("follow up with patricia desrosiers in a month", "PERSON", "patricia desrosiers"),
    ("She named him Frank", "PERSON", "Frank"),
    ("mail jane.doe+home@example.co.uk today", "EMAIL", "jane.doe+home@example.co.uk"),
    ("call +1 650-253-0000 now", "PHONE", "+1 650-253-0000"),
    ("Desk: +41 (0)96 471 07 95", "PHONE", "+41 (0)96 471 07 95"),
    ("Mobile: 03.93.92.16.85", "PHONE", "03.93.92.16.85"),
    ("Fax: 9498777106", "PHONE", "9498777106"),
    ("card 4111 1111 1111 1111 please", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("card 4454794511390933?", "CREDIT_CARD", "4454794511390933"),
    ("My IBAN is GB82 WEST 1234 5698 7654 32.", "IBAN", "GB82 WEST 1234 5698 7654 32"),
    ("iban de89370400440532013000 ok", "IBAN", "de89370400440532013000"),
    ("router at 192.168.1.20 today", "IP_ADDRESS", "192.168.1.20"),
    ("host 2001:db8::8a2e:370:7334 up", "IP_ADDRESS", "2001:db8::8a2e:370:7334"),
    ("mac 00:1A:2B:3C:4D:5E seen", "MAC_ADDRESS", "00:1A:2B:3C:4D:5E"),
    ("His social security number is 853-37-1694", "US_SSN", "853-37-1694"),
    ("SSN: 853371694", "US_SSN", "853371694"),
    ("my driver's license number is F162823540116", "US_DRIVER_LICENSE", "F162823540116"),
    ("at 48.85837, 2.29448 now", "GPS", "48.85837, 2.29448"),
    ("date of birth: 12/03/1985", "DATE_OF_BIRTH", "12/03/1985"),
    ("She was born on March 3, 1990 in Ohio", "DATE_OF_BIRTH", "March 3, 1990"),
    ("pull https://bob:hunter2@git.example.com/x", "CREDENTIALS", "bob:hunter2"),
    ("key ghp_abcdefghijklmnopqrstuvwxyz0123456789 leaked", "SECRET", None),
    ("aws AKIAIOSFODNN7EXAMPLE", "SECRET", "AKIAIOSFODNN7EXAMPLE"),
    ("password: Hunter2!Rocks", "SECRET", "Hunter2!Rocks"),
    ("token Zx9Qm2Lk8Vb4Nc7Rt1Yp5Hs3Jd6Fg0Aw high", "SECRET", None),
    ("I live at 1600 Pennsylvania Avenue NW, Washington, DC 20500.", "ADDRESS", None),
    ("Meet me at 6750 Koskikatu 25 Apt. 864\nArtilleros", "ADDRESS", None),
    ("He lives on the north side of Joaquin Suarez 2906.", "ADDRESS", None),
    ("Meet me at PSC 1437, Box 3833\nAPO AA 66791", "ADDRESS", None),
    ("ZIP: 3520", "ADDRESS", "3520"),
]


@pytest.mark.parametrize(("text", "kind", "value"), FOUND)
def test_detector_finds(anon: Anonymizer, text: str, kind: str, value: str | None) -> None:
    found = [f for f in anon.findings(text) if f.type == kind]
    assert found, f"{kind} not found in {text!r}: {anon.findings(text)}"
    if value is not None:
        assert found[0].value == value
    assert all(text[f.start : f.end] == f.value for f in found)


LEFT_ALONE = [
    "Capitalized words like Wisdom and Discipline are often mistaken with names.",
    "firmware 999.1.2.3 and version 10.0.19045",
    "set brightness to 40 at 7:30, 72 degrees",
    "start a 1 hour 15 minute and 30 second timer",
    "light.kitchen_ceiling turned on at 2024-05-01 12:30:45",
    "turn_0123456789abcdef call_fedcba9876543210",
    "sha 3f2a9b1c4d5e6f708192a3b4c5d6e7f8091a2b3c",
    "It is 3:45 PM on Monday, June 3",
    "set the thermostat to 21.5 degrees and the fan to 3",
    "walk 5 blocks down the road",
    "Order 12345678 shipped",
]


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_look_alikes_are_left_alone(anon: Anonymizer, text: str) -> None:
    assert anon.findings(text) == []
    assert anon.scrub(text) == text


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("card 4111 1111 1111 1112 please", "CREDIT_CARD"),  # fails Luhn
        ("card 4454794511390934?", "CREDIT_CARD"),
        ("My IBAN is GB82 WEST 1234 5698 7654 33.", "IBAN"),  # fails mod-97
        ("iban DE89370400440532013001", "IBAN"),
        ("SSN 000-12-3456 is not valid, nor 666-12-3456 or 900-12-3456", "US_SSN"),
    ],
)
def test_invalid_numbers_are_not_tagged_as_such(anon: Anonymizer, text: str, kind: str) -> None:
    assert kind not in {f.type for f in anon.findings(text)}


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("XX82WEST12345698765432")  # no such country


def test_tags_are_keyed_and_stable(anon: Anonymizer) -> None:
    once = anon.scrub("Call Maria Garcia at +1 650-253-0000.")
    assert once == anon.scrub("Call Maria Garcia at +1 650-253-0000.")
    assert "Maria" not in once and "650" not in once
    assert once.startswith("Call <PERSON_") and "<PHONE_" in once
    # One value, spelled two ways, gets one tag; another secret gives other tags.
    assert anon.tag("PHONE", "+1 650-253-0000") == anon.tag("PHONE", "+1 (650) 253 0000")
    other = Anonymizer(b"another-secret-0123456789", Inventory.default().keep_words())
    assert other.scrub("Call Maria Garcia") != anon.scrub("Call Maria Garcia")
    assert anon.tag("PERSON", "Maria Garcia") == anon.tag("PERSON", "maria  garcia")


def test_short_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="16 bytes"):
        Anonymizer(b"short")


def test_findings_do_not_overlap_and_validated_numbers_win(anon: Anonymizer) -> None:
    text = "Send to 17151 2450 Crown St, card 4111111111111111, Mr. Fábio Barros"
    found = anon.findings(text)
    assert [f.type for f in found] == ["ADDRESS", "CREDIT_CARD", "PERSON"]
    assert all(a.end <= b.start for a, b in zip(found, found[1:], strict=False))


def test_allowlist_keeps_home_vocabulary() -> None:
    text = "play Bohemian Rhapsody on the Zorblax Speaker for Zorblax"
    plain = Anonymizer(SECRET)
    assert Finding("PERSON", 50, 57, "Zorblax") in plain.findings(text)
    home = Anonymizer(SECRET, {"Zorblax Speaker", "Bohemian Rhapsody"})
    assert home.scrub(text) == "play Bohemian Rhapsody on the Zorblax Speaker for " + home.tag(
        "PERSON", "Zorblax"
    )


def test_people_in_the_inventory_are_not_allowlisted(anon: Anonymizer) -> None:
    assert anon.scrub("is Ada at home") == f"is {anon.tag('PERSON', 'Ada')} at home"
    assert anon.scrub("turn on the kitchen light") == "turn on the kitchen light"


def test_scrub_obj_keeps_structure(anon: Anonymizer) -> None:
    record = {
        "request": "text John Smith at +1 650-253-0000",
        "tool_calls": [{"name": "send_sms", "arguments": {"to": "+1 650-253-0000", "n": 2}}],
        "headers": {"Authorization": "Bearer abc", "api_key": "plain-words"},
        "ok": True,
        "score": 0.5,
        "none": None,
        "pair": ("John Smith", 1),
    }
    out = anon.scrub_obj(record)
    assert out.keys() == record.keys()
    phone = anon.tag("PHONE", "+1 650-253-0000")
    assert out["request"] == f"text {anon.tag('PERSON', 'John Smith')} at {phone}"
    assert out["tool_calls"][0] == {"name": "send_sms", "arguments": {"to": phone, "n": 2}}
    assert out["headers"]["api_key"].startswith("<SECRET_")  # the key says it is a secret
    assert out["headers"]["Authorization"].startswith("<SECRET_")
    assert (out["ok"], out["score"], out["none"]) == (True, 0.5, None)
    assert out["pair"] == (anon.tag("PERSON", "John Smith"), 1)
    assert record["request"].startswith("text John")  # the input is not changed


def test_rescrubbing_a_scrubbed_text_changes_nothing(anon: Anonymizer) -> None:
    once = anon.scrub("Krisztián Szöllösy, krisz@example.com, GB82 WEST 1234 5698 7654 32")
    assert anon.scrub(once) == once
