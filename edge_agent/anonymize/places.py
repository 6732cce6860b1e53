"""Where a person is: street addresses (a street line, then unit, city, state, ZIP and
country lines), ZIP codes after a cue, and GPS coordinates."""

from __future__ import annotations

import re
from collections.abc import Iterator

from edge_agent.anonymize.base import Finding, found
from edge_agent.anonymize.words import Kind, kind

_NUM = r"\d{1,6}[A-Za-z]?"
_W = r"[^\W\d_][\w'’.-]*"
_CAP = r"[^\W\d_a-z][\w'’-]*"
# Street types in any case. Words that double as smart-home vocabulary ("light", "garden",
# "station", "lock") are left out of this list.
_SUFFIX = (
    r"(?i:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|"
    r"terrace|parkway|pkwy|highway|hwy|route|rte|circle|cir|trail|trl|square|sq|crescent|alley|"
    r"plaza|mews|turnpike|pike|expressway|freeway|causeway|bypass|u|utca|út|útja|ul|ulica|"
    r"straße|strasse|str|gasse|weg|allee|platz|laan|straat|plein|vej|gade|gata|gatan|vegen|"
    r"veien|terrasse|katu|tie|polku|kuja)\.?(?!\w)"
)
# More USPS street types, only when capitalized ("Medvedev Islands", not "the islands").
_CAP_SUFFIX = (
    r"(?:Bridge|Brook|Brooks|Burg|Camp|Canyon|Cape|Center|Cliff|Cliffs|Club|Common|Corner|"
    r"Corners|Course|Courts|Cove|Coves|Creek|Crest|Crossing|Curve|Dale|Dam|Divide|Estate|"
    r"Estates|Extension|Falls|Ferry|Field|Fields|Flat|Flats|Ford|Forest|Forge|Forges|Fork|Fort|"
    r"Glen|Green|Greens|Grove|Harbor|Haven|Heights|Hill|Hills|Hollow|Inlet|Island|Islands|Isle|"
    r"Junction|Knoll|Knolls|Lake|Lakes|Landing|Manor|Meadow|Meadows|Mill|Mills|Mission|Motorway|"
    r"Mount|Mountain|Neck|Orchard|Oval|Parks|Pines|Plain|Plains|Point|Points|Port|Prairie|Ranch|"
    r"Rapids|Ridge|Close|River|Row|Shoal|Shoals|Shore|Shores|Summit|Throughway|Trace|Tunnel|Union|"
    r"Unions|Valley|Viaduct|Village|Villages|Ville|Vista|Walk|Walks)(?!\w)"
)
_PREFIX = (
    r"(?i:rua|avenida|avda\.|av\.|calle|c/|ul\.|ulica|via|viale|rue|piazza|strada|trg|"
    r"p\.?[ \t]?o\.?[ \t]+box|psc|unit|box|postbox)"
)
_GLUED = (
    r"[^\W\d_]+(?i:katu|tie|gata|gatan|vej|vegen|veien|gade|strasse|straße|str|weg|gasse|laan|"
    r"straat|allee|platz|polku|kuja|vägen|gränd)\.?"
)
# Every street line has a number: find numbers (fast), then try the street shapes anchored on
# each one, number last ("Kiannonkatu 98", "Rua Diadema 1903") or first ("12 Main St").
_GLUED_ENDINGS_TEXT = """
katu tie gata gatan vej vegen veien gade strasse straße str weg gasse laan straat allee
platz polku kuja vägen gränd
"""
_GLUED_ENDINGS = tuple(_GLUED_ENDINGS_TEXT.split())
_STREET_WORDS_TEXT = """
street st avenue ave road rd boulevard blvd lane ln drive dr court ct way place pl terrace
parkway pkwy highway hwy route rte circle cir trail trl square sq crescent alley plaza mews
turnpike pike expressway freeway causeway bypass u utca út útja ul ulica straße strasse str
gasse weg allee platz laan straat plein vej gade gata gatan vegen veien terrasse katu tie
polku kuja rua avenida avda av calle c/ via viale rue piazza strada trg box psc unit postbox
p.o
"""
_STREET_WORDS = frozenset(_STREET_WORDS_TEXT.split())
_WORD_START = re.compile(r"(?<![\w/.'’-])[^\W_]")
_NUMBER = re.compile(r"(?<![\w.,:-])\d{1,6}[A-Za-z]?(?![\w:])")
_NUM_LAST = re.compile(
    rf"(?<![\w/])(?:{_NUM}[ \t]+)?(?:(?:{_W}[ \t]+){{0,2}}(?:{_GLUED}|{_W}[ \t]+{_SUFFIX})"
    rf"|{_PREFIX}(?:[ \t]+{_W}){{0,5}}|(?:{_CAP}[ \t]+){{0,2}}{_CAP})[ \t]+{_NUM}$"
)
_NUM_FIRST = re.compile(
    rf"{_NUM}(?:[ \t]+{_NUM})?[ \t]+(?:"
    rf"(?:{_W}[ \t]+){{1,3}}(?:{_SUFFIX}|{_CAP_SUFFIX})(?:[ \t]+{_NUM}(?!\w))?"
    rf"|(?:{_W}[ \t]+){{0,2}}{_W}[ \t]+{_NUM}(?!\w)|{_PREFIX}[ \t]+{_NUM}(?!\w)"
    rf"|(?:{_PREFIX}|(?i:avenue|boulevard|chemin|impasse|allée))(?:[ \t]+{_W}){{1,3}}"
    rf"|(?<=\d[ \t]){_CAP}(?:[ \t]+{_CAP}){{0,3}})"
)
_MILITARY = re.compile(
    rf"(?:(?:USNS|USNV|USS|USCGC)[ \t]+{_CAP}(?:[ \t]+{_CAP})?[ \t]*,?[ \t]*\n?[ \t]*)?"
    r"\b(?:FPO|APO|DPO)[ \t]+A[AEP][ \t]+\d{5}\b"
)
_NAMED_STREET = re.compile(rf"(?<![\w-]){_CAP}[ \t]+{_CAP_SUFFIX}")
_LOCATION_CUE = re.compile(r"(?i:\b(?:at|on|of|to|in|from|and|is|address|live|lives)\b:?[ \t]*)$")
_UNIT = re.compile(
    r"\.?[ \t]*,?(?:[ \t]*\n[ \t?*•-]*)*[ \t]*"
    r"(?:(?i:apt\.?|apartment|suite|ste\.?|unit|box|floor|fl\.?|#)[ \t]*#?\d{1,6}[A-Za-z]?\.?"
    r"|(?i:st|street|rd|road|ave)\.?(?!\w))"
)
# Postal codes: US/DE/FR, BR "75534-030", CA "K1A 0B1", SE "394 13", NL "7412 SL", UK "NW1 6XE".
_POSTAL = (
    r"\d{4,5}(?:-\d{3,4})?|[A-Z]\d[A-Z][ ]?\d[A-Z]\d|\d{3}[ ]\d{2}|\d{4}[ ][A-Z]{2}"
    r"|[A-Z]{1,2}\d[A-Z\d]?[ ]\d[A-Z]{2}"
)
# A UK postcode as Royal Mail defines it (outward A9, A99, AA9, AA99, A9A, AA9A; inward 9AA
# without C I K M O V): specific enough to tag without a cue, once sizes that fit the shape
# are left out ("M2 2TB").
_UK_POSTCODE = (
    r"(?:GIR|[A-PR-UWYZ](?:\d[A-HJKPSTUW\d]?|[A-HK-Y]\d[ABEHMNPRV-Y\d]?))"
    r"[ ]?(?!\d[GPT]B)\d[ABD-HJLNP-UW-Z]{2}"
)
# The postcode first: else "SW1A" of "London SW1A 2AA" reads as a word and "2AA" is left out.
_PLACE_WORD = rf"{_POSTAL}|[^\W\d_][\w'’.-]*|\(\w+\)"
# One city / state / country / ZIP part, after a comma, a line break or a space.
_PLACE_LINE = re.compile(
    r"(?:[ \t]*,[ \t]*(?:\n[ \t?*•-]*)*|(?:[ \t]*\n[ \t?*•-]*)+|[ \t]+)"
    rf"((?:{_PLACE_WORD})(?:[ \t]+(?:{_PLACE_WORD})){{0,4}})(?![\w:])"
)
_ZIP = re.compile(rf"{_POSTAL}|[A-Z]{{1,2}}\d[A-Z\d]?")


def find_addresses(text: str) -> Iterator[Finding]:
    covered = 0
    for number in _NUMBER.finditer(text):
        if number.start() < covered:
            continue
        street = _street_at(text, number.start(), number.end())
        if street:
            covered = _extend(text, street[1])
            yield found("ADDRESS", text, street[0], covered)
    for match in _MILITARY.finditer(text):
        yield found("ADDRESS", text, *match.span())
    yield from _zips(text)


def find_named_streets(text: str) -> Iterator[Finding]:
    """Streets without a number: "Marina Fort", "Elisabeth Parks" (a name, then a street type)."""
    for match in _NAMED_STREET.finditer(text):
        if kind(match.group().split()[0]) is Kind.NAME:
            yield found("ADDRESS", text, *match.span())


def _street_at(text: str, start: int, end: int) -> tuple[int, int] | None:
    if _street_word_before(text, start):
        return _num_last(text, start, end) or _num_first(text, start)
    return _num_first(text, start)


def _street_word_before(text: str, start: int) -> bool:
    """A cheap test that lets most numbers ("to 40", "card 4111...") skip the street patterns
    that end in a number: the word before must be capitalized, a street type or a prefix."""
    before = text[max(0, start - 24) : start].split()
    if not before:
        return False
    word = before[-1]
    low = word.casefold().rstrip(".")
    return word[0].isupper() or low in _STREET_WORDS or low.endswith(_GLUED_ENDINGS)


def _num_last(text: str, start: int, end: int) -> tuple[int, int] | None:
    # Try the few word starts before the number rather than every character (much faster).
    for word in _WORD_START.finditer(text, max(0, start - 60), start + 1):
        last = _NUM_LAST.match(text, word.start(), end)
        if last:
            if _plausible_street(last.group(), text, last.start()):
                return last.span()
            break
    return None


def _num_first(text: str, start: int) -> tuple[int, int] | None:
    first = _NUM_FIRST.match(text, start)
    if first and _plausible_street(first.group(), text, first.start()):
        return first.span()
    return None


_LETTERS = re.compile(r"[^\W\d_]+")
_TYPED = re.compile(rf"{_GLUED}|(?<!\w){_PREFIX}(?!\w)")
_HAS_TYPE = re.compile(rf"(?<!\w)(?:{_SUFFIX}|{_CAP_SUFFIX})")
_TWO_NUMBERS = re.compile(r"\d+[A-Za-z]?[ \t]+\d")
_FRENCH = re.compile(rf"(?i:{_PREFIX}|avenue|boulevard)")


def _plausible_street(street: str, text: str, start: int) -> bool:
    """A street line needs a street type or a word that is not ordinary English; a bare "Name
    12" also needs a place cue before it. This keeps "5 minutes and 30 seconds" out."""
    words = _LETTERS.findall(street)
    if _TYPED.search(street):
        return True
    named = any(kind(w) is Kind.NAME for w in words)
    two_numbers = _TWO_NUMBERS.match(street)
    if _HAS_TYPE.search(street):
        return named or any(w[0].isupper() for w in words) or bool(two_numbers)
    if two_numbers and words and words[0][0].isupper():
        return named or bool(_FRENCH.search(street))
    if street[0].isdigit():
        return named
    return named and bool(_LOCATION_CUE.search(text, max(0, start - 12), start))


def _extend(text: str, end: int) -> int:
    """Swallow units, then up to four city / state / country / ZIP parts after the street."""
    for _ in range(5):
        unit = _UNIT.match(text, end)
        if unit:
            end = unit.end()
            continue
        line = _PLACE_LINE.match(text, end)
        if not line:
            break
        kept = _place_prefix(line.group(1), "\n" in text[end : line.start(1)])
        if not kept:
            break
        end = line.start(1) + kept
    return end


def _place_prefix(part: str, own_line: bool) -> int:
    """How much of `part` is a place: all of it, or its leading capitalized words ("Estonia"
    of "Estonia for this card"), or nothing."""
    if _place_like(part, own_line):
        return len(part)
    words = part.split()
    while len(words) > 1:
        words.pop()
        if words[-1][0].isupper() and _place_like(" ".join(words), False):
            return part.index(words[-1], len(" ".join(words[:-1]))) + len(words[-1])
    return 0


def _place_like(part: str, own_line: bool) -> bool:
    """City, state, country or ZIP: capitalized or upper-case words, a ZIP, or a short line of
    its own ("delmas, mp 35739" in lowercase text), but no run of ordinary words."""
    tokens = part.split()
    if any(_ZIP.fullmatch(t) for t in tokens):
        return True
    if own_line and len(tokens) <= 4:
        return any(kind(t) is not Kind.COMMON for t in tokens)
    return len(tokens) <= 4 and all(
        t[0].isupper() or t in _PARTICLES or t[0] == "(" for t in tokens
    )


_PLACE_PARTICLES_TEXT = "de del la do da du des di dos das van von der den le el"
_PARTICLES = frozenset(_PLACE_PARTICLES_TEXT.split())


_ZIP_CUE = re.compile(
    r"(?i:\b(?:zip(?:[ \t]?code)?|postal[ \t]?code|post[ \t]?code|plz)(?:[ \t]+is)?[ \t]*[:#]?"
    rf"[ \t]*)({_POSTAL}|(?i:{_UK_POSTCODE}))\b"
)
_STATE_ZIP = re.compile(r"\b[A-Z]{2}[ \t]+(\d{5}(?:-\d{4})?)\b")
_UK = re.compile(rf"(?<![\w-])({_UK_POSTCODE})(?![\w-])")
_UK_INWARD = re.compile(r"\d[ABD-HJLNP-UW-Z]{2}(?![\w-])")


def _zips(text: str) -> Iterator[Finding]:
    # The inward half of a UK postcode ("1AA") is rare enough to gate the costlier pattern.
    uk = (_UK,) if _UK_INWARD.search(text) else ()
    for pattern in (_ZIP_CUE, _STATE_ZIP, *uk):
        for match in pattern.finditer(text):
            yield found("ADDRESS", text, *match.span(1))


_COORD = r"[-+]?\d{1,3}\.\d{4,}"
_GPS = re.compile(rf"(?<![\w.])({_COORD})[ \t]*,[ \t]*({_COORD})(?![\w.])")
_DMS = re.compile(
    r"\d{1,3}°[ \t]?\d{1,2}['′][ \t]?(?:\d{1,2}(?:\.\d+)?[\"″][ \t]?)?[NSns][ \t,]*"
    r"\d{1,3}°[ \t]?\d{1,2}['′][ \t]?(?:\d{1,2}(?:\.\d+)?[\"″][ \t]?)?[EWew]"
)


def find_coordinates(text: str) -> Iterator[Finding]:
    for match in _GPS.finditer(text):
        lat, lon = float(match.group(1)), float(match.group(2))
        if abs(lat) <= 90 and abs(lon) <= 180:
            yield found("GPS", text, *match.span())
    for match in _DMS.finditer(text):
        yield found("GPS", text, *match.span())
