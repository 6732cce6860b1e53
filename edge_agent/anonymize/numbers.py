"""Numbers that identify a person: payment cards (Luhn), IBANs (mod-97), US SSNs, US driver
licenses (after a cue) and phone numbers (validated by `phonenumbers`)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import phonenumbers

from edge_agent.anonymize.base import Finding, found

_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def find_cards(text: str) -> Iterator[Finding]:
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if len(set(digits)) > 1 and luhn_ok(digits):
            yield found("CREDIT_CARD", text, *match.span())


# Lengths from the SWIFT IBAN registry: with them a run of letters after an IBAN is not eaten.
_IBAN_LENGTHS_TEXT = """
AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 DO28
EE20 EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 IQ23 IS26
IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 ME22 MK19 MR27 MT31 MU30 NL18
NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 SC31 SE24 SI19 SK24 SM27 ST25 SV28 TL23 TN24
TR26 UA29 VA22 VG24 XK20
"""
_IBAN_LENGTHS = {entry[:2]: int(entry[2:]) for entry in _IBAN_LENGTHS_TEXT.split()}
_IBAN = re.compile(r"(?<![\w])[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30}")


def iban_ok(iban: str) -> bool:
    iban = iban.upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def find_ibans(text: str) -> Iterator[Finding]:
    for match in _IBAN.finditer(text):
        length = _IBAN_LENGTHS.get(match.group()[:2].upper())
        if length is None:
            continue
        end, count = match.start(), 0
        while count < length and end < match.end():  # walk `length` characters, skipping spaces
            count += text[end] != " "
            end += 1
        value = text[match.start() : end].replace(" ", "")
        boundary = end >= len(text) or not text[end].isalnum()
        if boundary and iban_ok(value):
            yield found("IBAN", text, match.start(), end)


_SSN = re.compile(r"(?<![\w-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\w-])")
_SSN_CUE = re.compile(r"\b(?:ssn|social security|social insurance)\b", re.I)


def find_ssns(text: str) -> Iterator[Finding]:
    for match in _SSN.finditer(text):
        area, group, serial = match.group(1), match.group(3), match.group(4)
        if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
            continue
        # Nine bare digits are too common to tag without a cue ("SSN", "social security").
        if match.group(2) or _SSN_CUE.search(text, max(0, match.start() - 40), match.start()):
            yield found("US_SSN", text, *match.span())


_LICENSE = re.compile(
    r"(?i:\b(?:driver'?s?[ \t]+licen[cs]e|driving[ \t]+licen[cs]e|licen[cs]e|\bDL)"
    r"(?:[ \t]+(?:number|no\.?|num|#|id))?(?:[ \t]+is)?[ \t]*[:#]?[ \t]*)"
    r"([A-Z0-9](?:[A-Z0-9-]{3,18})[A-Z0-9])\b"
)


def find_driver_licenses(text: str) -> Iterator[Finding]:
    for match in _LICENSE.finditer(text):
        if any(c.isdigit() for c in match.group(1)):
            yield found("US_DRIVER_LICENSE", text, *match.span(1))


DEFAULT_REGIONS = (
    "US", "GB", "CA", "AU", "IN", "DE", "FR", "IT", "ES", "NL", "BE", "CH", "AT", "SE", "NO",
    "DK", "FI", "PL", "CZ", "HU", "PT", "IE", "BR", "MX", "JP",
)  # fmt: skip
_PHONE = re.compile(
    r"(?<![\w+/.:-])(?:\+\d{1,3}[ .-]?|00\d{1,3}[ .-])?(?:\(\d{1,5}\)[ .-]?)?"
    r"\d{1,15}(?:[ .-]\d{1,10}){0,5}(?:[ ]?(?:x|ext\.?)[ ]?\d{1,6})?(?![\w+]|[.:-]?\d)"
)
_SEVEN_DIGITS = re.compile(r"\d(?:[ .()/+-]{0,3}\d){6}")
_VERSION = re.compile(r"\d+(?:\.\d+)*\.\d(?:\.\d+)*")  # a dotted group of one digit: 10.0.19045
_DATE_LIKE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")


def find_phones(text: str, regions: Sequence[str] = DEFAULT_REGIONS) -> Iterator[Finding]:
    if not _SEVEN_DIGITS.search(text):
        return
    for match in _PHONE.finditer(text):
        candidate = match.group()
        digits = sum(c.isdigit() for c in candidate)
        if (
            not 7 <= digits <= 15
            or _DATE_LIKE.fullmatch(candidate)
            or _VERSION.fullmatch(candidate)
        ):
            continue
        # A bare run of digits must be a full, valid number somewhere; formatted ones (groups,
        # +country, parentheses) need only be possible: fake and new ranges fail validation.
        bare = candidate.isdigit()
        if (digits >= 10 or not bare) and _phone_ok(candidate, regions, strict=bare):
            yield found("PHONE", text, *match.span())


def _phone_ok(candidate: str, regions: Sequence[str], strict: bool) -> bool:
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    check = phonenumbers.is_valid_number if strict else phonenumbers.is_possible_number
    for region in (None,) if candidate.startswith("+") else regions:
        try:
            if check(phonenumbers.parse(candidate, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False
