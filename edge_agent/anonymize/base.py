"""What a detector returns, and how overlapping findings are settled."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of personal data: its type, where it is in the text, and the text itself."""

    type: str
    start: int
    end: int
    value: str


Detector = Callable[[str], Iterable[Finding]]

# Higher wins an overlap: a validated number (Luhn, mod-97) beats a guess at a name or an address.
PRIORITY = {
    "SECRET": 9,
    "CREDENTIALS": 9,
    "EMAIL": 8,
    "IBAN": 8,
    "CREDIT_CARD": 8,
    "US_SSN": 7,
    "IP_ADDRESS": 7,
    "MAC_ADDRESS": 7,
    "GPS": 7,
    "DATE_OF_BIRTH": 6,
    "US_DRIVER_LICENSE": 6,
    "ADDRESS": 5,  # a street line's numbers ("17151 2450 Crown St") also look like a phone number
    "PHONE": 4,
    "PERSON": 3,
}


def found(kind: str, text: str, start: int, end: int) -> Finding:
    return Finding(kind, start, end, text[start:end])


def resolve(findings: Iterable[Finding]) -> list[Finding]:
    """Non-overlapping findings in text order; on overlap the higher priority, then longer, wins."""
    ranked = sorted(findings, key=lambda f: (-PRIORITY.get(f.type, 0), f.start - f.end, f.start))
    kept: list[Finding] = []
    for cand in ranked:
        if all(cand.end <= k.start or cand.start >= k.end for k in kept):
            kept.append(cand)
    return sorted(kept, key=lambda f: f.start)
