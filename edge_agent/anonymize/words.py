"""English word lists (SCOWL, vendored) that tell an ordinary capitalized word from a name."""

from __future__ import annotations

import gzip
import re
from functools import cache
from importlib import resources

_DATA = "data/anonymize"


class Kind:
    """What a word is, as plain strings (compared and hashed on every token, so no Enum)."""

    COMMON = "common"  # an English word that is never a name: "Wisdom", "Kitchen"
    AMBIGUOUS = "ambiguous"  # a word and a name: "Rose", "Frank", "Young"
    NAME = "name"  # a known proper noun, or no English word at all: "Laura", "Szöllösy"


# Capitalized words that start sentences, label fields, name calendar things or units: never a
# name by themselves even when SCOWL lists them capitalized ("June", "Monday", "English", "PM").
_NEVER = """
i i'm i'd i'll i've im a an the my your our his her their its this that these those what who
whom whose where when why how which is are was were be do does did can could would should will
shall may might must please hi hello hey dear ok okay yes no thanks thank sir madam mr mrs ms
miss dr prof mister name phone mobile desk fax email e-mail address website date time zip
monday tuesday wednesday thursday friday saturday sunday january february march april may june
july august september october november december christmas easter halloween thanksgiving
english american british european god bot user assistant system st rd ave apt blvd
celsius fahrenheit kelvin c'mon
am pm utc gmt bst cet cest est edt pst pdt kb mb gb tb kbps mbps gbps kw kwh wh mah hz khz mhz
ghz db lm
"""


@cache
def _load(name: str) -> frozenset[str]:
    path = resources.files("edge_agent").joinpath(f"{_DATA}/{name}")
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        return frozenset(f.read().split())


@cache
def never_names() -> frozenset[str]:
    return frozenset(_NEVER.split())


def english() -> frozenset[str]:
    return _load("english_words.txt.gz")


def proper() -> frozenset[str]:
    return _load("proper_nouns.txt.gz")


def kind(token: str) -> str:
    """How likely `token` (any case) is a name, judged by the word lists alone."""
    word = token.rstrip(".").casefold()
    if "'" in word or "’" in word:
        word = _CONTRACTION.sub("", word)  # "You're" is "you", "Maria's" is "maria"
    if word in _NEVER_SET:
        return Kind.COMMON
    common, known = word in _ENGLISH, word in _PROPER
    if not (common or known) and "-" in word:
        common = all(part in _ENGLISH or part in _NEVER_SET for part in word.split("-"))
    if common and known:
        return Kind.AMBIGUOUS
    return Kind.COMMON if common else Kind.NAME


_CONTRACTION = re.compile(r"['’](?:s|re|ll|ve|d|m)$")
# Loaded at import: every scrub needs them, and a set lookup must not pay a call per token.
_NEVER_SET = never_names()
_ENGLISH = english()
_PROPER = proper()
_FIRST_NAMES = _PROPER - _ENGLISH - _NEVER_SET


# Of the words above, those that are first names too: names only where the context says so.
_NAMES_TOO = frozenset({"will", "may", "june", "april", "august"})


def names_too(word: str) -> bool:
    """Will, May: never a name by themselves, but one after a contact verb."""
    return word.rstrip(".").casefold() in _NAMES_TOO


def proper_word(word: str) -> bool:
    """Whether SCOWL lists `word` capitalized: a name, a place, a brand ("bill", "maria")."""
    return word.casefold() in _PROPER


def known_name(word: str) -> bool:
    """A proper noun in SCOWL that is no English word ("laura", "olga"): a name even lowercase."""
    return word in _FIRST_NAMES
