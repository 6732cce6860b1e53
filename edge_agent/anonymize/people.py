"""Person names (capitalized runs judged against English word lists, plus cue phrases) and
dates of birth (a date after a birth cue)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache

from edge_agent.anonymize.base import Finding, found
from edge_agent.anonymize.words import Kind, kind, known_name, names_too, proper_word


@cache
def _upper_class() -> str:
    """A regex character class body of the uppercase letters of the BMP's alphabets (Python's
    `re` has no \\p{Lu})."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x41, 0x2000):
        if chr(code).isupper():
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return "".join(
        re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges
    )


_U = _upper_class()
_L = r"[^\W\d_]"
# O'Brien and Jean-Luc stay one word; a possessive 's does not join the name.
_WORD = rf"[{_U}]{_L}*(?:['’](?:[{_U}]{_L}+|{_L}{{2,}}))*(?:-[{_U}]{_L}+)*"
_TOKEN = rf"(?:{_WORD}|[{_U}]\.)"
_PARTICLE = r"(?:van|von|de|da|del|della|der|den|di|du|la|le|bin|ibn|al|el|dos|das|ter|ten)"
_RUN = re.compile(
    rf"(?<![\w@/.#])({_TOKEN}(?:[ \t]+(?:{_PARTICLE}[ \t]+)?{_TOKEN}){{0,5}})(?![\w@])"
)
_PARTICLES = frozenset(_PARTICLE[3:-1].split("|"))
_TOKENS = re.compile(rf"{_TOKEN}|{_PARTICLE}")
_HONORIFIC = re.compile(r"(?:\b(?:mr|mrs|ms|miss|mx|dr|prof|sir|dame|lady|lord)\.?[ \t]+)$", re.I)
# Verbs whose object is a person: "call Maria", "remind Will", "Texting Will Turner".
_CONTACT = (
    r"(?:call|text|email|e-mail|remind|ask|ping|thank)(?:s|ed|ing)?|phon(?:e|es|ed|ing)|"
    r"ring(?:s|ing)?|messag(?:e|es|ed|ing)|sms|tell(?:s|ing)?|notif(?:y|ies|ied|ying)|"
    r"invit(?:e|es|ed|ing)|pag(?:e|es|ed|ing)|facetim(?:e|ed|ing)"
)
# After these a single ambiguous word ("Frank") or a lowercase known name ("patricia") counts.
_CUE = re.compile(
    r"(?:\b(?:name\s+is|name's|named(?:\s+(?:him|her|them|it))?|called|call\s+me|i\s+am|i'm|"
    r"this\s+is|with|by|said|told|asked|dear|hi|hello|hey|to|from|under|name:|contact|"
    rf"met|meet|and|me|starring|{_CONTACT})[ \t,]+|[A-Z]\w+,[ \t]+)$",
    re.I,
)
_CONTACT_BEFORE = re.compile(rf"(?i:\b(?:{_CONTACT}))[ \t]+$")
_LOWER = r"[^\W\d_A-Z]+"
# Lowercase (a voice transcript): after the first verbs the next word is a person ("call mark",
# "text xiomara"); the others are nouns too ("email subscription"), so there only a proper
# noun is ("send a text to bill"). "phone" and "ring" are left out: "my phone bill".
_CALL_LOWER = r"(?:call|text|tell|remind|ask|ping|thank)(?:ing)?|invit(?:e|ing)|facetim(?:e|ing)"
_SEND_LOWER = (
    r"email|e-mail|message|sms|notify|page|(?:send|pay|transfer|wire)\b[^.!?\n]{0,40}?\bto"
)
_CONTACT_LOWER = re.compile(
    rf"(?i:\b(?:({_CALL_LOWER})|{_SEND_LOWER})[ \t]+)({_LOWER})(?:[ \t]+({_LOWER}))?"
    r"(?![\w@]|['’]t\b)"
)
_CONTACT_STEMS = (
    "call", "text", "tell", "remind", "ask", "ping", "thank", "invit", "facetim", "mail", "messag",
    "sms", "notify", "page", "send", "pay", "transfer", "wire",
)  # fmt: skip
_CUE_LOWER = re.compile(
    r"(?i:\b(?:name[ \t]+is|name:|named|called|calls?[ \t]+me|with|mr\.?|mrs\.?|ms\.?|"
    rf"dr\.?|dear))[ \t]+({_LOWER}(?:[ \t]+{_LOWER})?)\b"
)


def find_names(text: str) -> Iterator[Finding]:
    for match in _RUN.finditer(text):
        run = match.group(1)
        single = " " not in run and "\t" not in run
        # The usual case, a capitalized first word: "The", "What", "Turn" (but "remind Will").
        if single and _token_kind(run) in ("common", "particle") and not _contacted(text, match):
            continue
        span = _name_in_run(text, match.start(1), match.end(1))
        if span:
            yield found("PERSON", text, *span)
    yield from _lowercase_after_cue(text)
    yield from _lowercase_after_contact(text)
    yield from _lowercase_known_names(text)


def _name_in_run(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The part of a capitalized run that is a name: drop ordinary words at its edges, then
    accept it if a word is clearly a name or the context vouches for an ambiguous one."""
    tokens = [
        (m.start() + start, m.end() + start, m.group()) for m in _TOKENS.finditer(text[start:end])
    ]
    kinds = [_token_kind(t) for _, _, t in tokens]
    while kinds and kinds[0] in ("common", "particle", "initial"):
        if _first_name_too(text, tokens, kinds):
            kinds[0] = "ambiguous"
            break
        tokens, kinds = tokens[1:], kinds[1:]
    while kinds and kinds[-1] in ("common", "particle"):
        tokens, kinds = tokens[:-1], kinds[:-1]
    if not tokens or "common" in kinds:
        return None
    first, last = tokens[0][0], tokens[-1][1]
    vouched = kinds.count("name") + kinds.count("ambiguous") >= 2 or _has_cue(text, first)
    if "name" in kinds or (vouched and "ambiguous" in kinds) or _line_label(text, last):
        return first, last
    return None


def _token_kind(token: str) -> str:
    if token in _PARTICLES:
        return "particle"
    if len(token) <= 2 and token.rstrip(".").isupper():
        return "initial"
    if len(token) > 1 and token.isupper():
        return "common"  # ATM, TV, KNIVSTA: acronyms and shouting, not names
    if _identifier(token):
        return "common"
    return kind(token)


# Surnames with a capital inside: McDonald, MacArthur, DeShawn, LaToya, DiCaprio, VanDyke.
_NAME_PREFIXES = frozenset(["mc", "mac", "de", "di", "da", "la", "le", "du", "van", "von", "fitz"])


def _identifier(token: str) -> bool:
    """CamelCase code names (HassTurnOn, HassBroadcast, YouTube) are tool and product names,
    not people: more than one capital inside, or one after something no surname starts with."""
    if token[1:].islower():
        return False  # the usual case, checked at C speed
    humps = [i for i in range(1, len(token)) if token[i].isupper() and token[i - 1].islower()]
    if not humps:
        return False
    return len(humps) > 1 or token[: humps[0]].casefold() not in _NAME_PREFIXES


def _first_name_too(text: str, tokens: list[tuple[int, int, str]], kinds: list[str]) -> bool:
    """Will, May, June: they start sentences and name months, but are names after a contact
    verb ("remind Will") or after a cue with a surname ("to Will Turner")."""
    start, _, word = tokens[0]
    if not names_too(word):
        return False
    surname = len(kinds) > 1 and kinds[1] in ("name", "ambiguous")
    return _contact_before(text, start) or (surname and _has_cue(text, start))


def _contacted(text: str, match: re.Match[str]) -> bool:
    return names_too(match.group(1)) and _contact_before(text, match.start(1))


def _contact_before(text: str, start: int) -> bool:
    return bool(_CONTACT_BEFORE.search(text[max(0, start - 12) : start]))


def _has_cue(text: str, start: int) -> bool:
    before = text[max(0, start - 16) : start]
    return bool(_HONORIFIC.search(before) or _CUE.search(before))


def _line_label(text: str, end: int) -> bool:
    """A speaker label at the start of a line: "John: You saved my life!"."""
    line_start = text.rfind("\n", 0, end) + 1
    return text.startswith(":", end) and text.count(" ", line_start, end) <= 2


def _lowercase_after_cue(text: str) -> Iterator[Finding]:
    """Lowercase names after a cue ("follow up with patricia desrosiers"): known names only."""
    for match in _CUE_LOWER.finditer(text):
        words = match.group(1).split()
        if kind(words[0]) is not Kind.NAME:
            continue
        if len(words) == 2 and kind(words[1]) is Kind.COMMON:
            yield found("PERSON", text, match.start(1), match.start(1) + len(words[0]))
        else:
            yield found("PERSON", text, match.start(1), match.end(1))


def _lowercase_after_contact(text: str) -> Iterator[Finding]:
    """Lowercase names after a contact verb ("call maria gonzalez", "remind will", "send 500
    dollars to will turner"): a proper noun or a word no English list knows, then a surname."""
    lowered = text.lower()
    if not any(verb in lowered for verb in _CONTACT_STEMS):
        return  # the usual case; a substring test is much cheaper than the pattern
    for match in _CONTACT_LOWER.finditer(text):
        if not _lower_name(match.group(2), strong=match.group(1) is not None):
            continue
        surname = match.group(3)
        keep = surname and len(surname) > 2 and kind(surname) in (Kind.NAME, Kind.AMBIGUOUS)
        yield found("PERSON", text, match.start(2), match.end(3 if keep else 2))


def _lower_name(word: str, strong: bool) -> bool:
    if names_too(word):
        return True
    if len(word) < 3:
        return False
    return kind(word) in (Kind.NAME, Kind.AMBIGUOUS) if strong else proper_word(word)


_LOWER_WORD = re.compile(r"(?<![\w@/.#'’-])[a-zà-öø-ÿ][a-zà-öø-ÿ'’-]{2,}(?![\w@])")
_SURNAME = re.compile(r"[ \t]+(?:[a-z]\.?[ \t]+)?([a-zà-öø-ÿ][\w-]+)(?:['’]s)?(?![\w@])")


def _lowercase_known_names(text: str) -> Iterator[Finding]:
    """Lowercase text (transcripts, lowercased logs): a known first name that is no English word,
    with the unknown surname after it ("naomi ryan", "olga krylova's")."""
    for match in _LOWER_WORD.finditer(text):
        if not known_name(match.group()):
            continue
        end = match.end()
        surname = _SURNAME.match(text, end)
        if surname and kind(surname.group(1)) is Kind.NAME:
            end = surname.end(1)
        yield found("PERSON", text, match.start(), end)


_DATE = (
    r"(?:\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"
    r"|\d{1,2}(?:st|nd|rd|th)?[ \t]+[A-Za-z]{3,9}\.?,?[ \t]+\d{4}"
    r"|[A-Za-z]{3,9}\.?[ \t]+\d{1,2}(?:st|nd|rd|th)?,?[ \t]+\d{4})"
)
_DOB = re.compile(
    rf"\b(?:born(?:[ \t]+on)?|date[ \t]+of[ \t]+birth|d\.?o\.?b\.?|birth[ \t]?date|birthday"
    rf"(?:[ \t]+is)?)[ \t]*[:\-]?[ \t]*({_DATE})",
    re.I,
)


def find_birth_dates(text: str) -> Iterator[Finding]:
    for match in _DOB.finditer(text):
        yield found("DATE_OF_BIRTH", text, match.start(1), match.end(1))
