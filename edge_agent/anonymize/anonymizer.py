"""The anonymizer: run every detector, settle overlaps, replace each finding with a keyed tag."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from edge_agent.anonymize import credentials, network, numbers, people, places
from edge_agent.anonymize.base import Detector, Finding, resolve
from edge_agent.errors import ConfigError

# Non-personal words every home uses that the name detector would otherwise take for names.
_HOME_WORDS_TEXT = """
alexa siri google cortana sonos hue philips nest ecobee chromecast roku apple kodi plex
spotify netflix youtube hulu zigbee z-wave matter thread wi-fi wifi bluetooth homekit ikea
tradfri shelly tuya xiaomi aqara ring arlo wyze roomba dyson tesla xbox playstation nintendo
switch sony bose samsung lg yale schlage lutron caseta wemo kasa tp-link eufy ecovacs
neato irobot denon yamaha bosch miele whirlpool frigidaire lifx nanoleaf govee wiz sengled
hubitat smartthings insteon honeywell resideo tado netatmo somfy velux dreame roborock
soundbar sunroom mudroom boathouse playroom homepod airpods iphone ipad imac macbook
"""
HOME_WORDS = frozenset(_HOME_WORDS_TEXT.split())
# Only guesses are checked against the allowlist: no home calls a device by a card number.
_SOFT = frozenset({"PERSON", "ADDRESS"})
_SECRET_KEYS = re.compile(
    r"(?i)pass(?:word|wd|phrase)?|secret|token|api[_-]?key|credential|authorization|cookie"
)


class Anonymizer:
    """A pure transform from text (or JSON-like data) to what may leave the device.

    Each finding becomes ``<TYPE_xxxxxx>``: an HMAC-SHA256 of the type and the normalized value
    under the device's secret. No mapping table exists; the same value always gets the same tag
    on this device, and nobody without the secret can test a guess against a tag."""

    def __init__(
        self,
        secret: bytes,
        keep: Iterable[str] = (),
        *,
        phone_regions: Sequence[str] = numbers.DEFAULT_REGIONS,
        tag_chars: int = 6,
        extra_detectors: Sequence[Detector] = (),
    ) -> None:
        if len(secret) < 16:
            raise ConfigError(
                "the anonymizer secret must be at least 16 bytes; use device_secret()"
            )
        self._secret = secret
        self._tag_chars = tag_chars  # 24 bits: tags rarely collide within a log, and stay short
        self._allow = _phrase_set(set(keep) | HOME_WORDS)
        # Detectors of numbers run only on text with a digit: most log lines have none.
        self._detectors: list[Detector] = [
            credentials.find_secrets,
            network.find_emails,
            people.find_names,
            places.find_named_streets,
            *extra_detectors,
        ]
        self._number_detectors: list[Detector] = [
            network.find_ips,
            network.find_macs,
            numbers.find_cards,
            numbers.find_ibans,
            numbers.find_ssns,
            numbers.find_driver_licenses,
            partial(numbers.find_phones, regions=tuple(phone_regions)),
            places.find_coordinates,
            places.find_addresses,
            people.find_birth_dates,
        ]

    def findings(self, text: str) -> list[Finding]:
        """Every piece of personal data in `text`, in order, none overlapping."""
        detectors = self._detectors
        if _DIGIT.search(text):
            detectors = detectors + self._number_detectors
        candidates = [f for detect in detectors for f in detect(text)]
        return resolve(f for f in candidates if f.type not in _SOFT or not self._allowed(text, f))

    def scrub(self, text: str) -> str:
        """`text` with every finding replaced by its tag."""
        out, pos = [], 0
        for finding in self.findings(text):
            out += [text[pos : finding.start], self.tag(finding.type, finding.value)]
            pos = finding.end
        out.append(text[pos:])
        return "".join(out)

    def scrub_obj(self, obj: Any) -> Any:
        """A copy of JSON-like data with every string value scrubbed; keys and shape are kept.
        A value under a key like ``password`` or ``api_key`` is a secret as a whole."""
        return _walk(obj, self.scrub, self._secret_value)

    def _allowed(self, text: str, finding: Finding) -> bool:
        """Whether an allowlisted phrase covers `finding`: the word n-grams around it are looked
        up in a set (a regex of hundreds of phrases would cost more than all detectors)."""
        phrases, most, chars, vocabulary = self._allow
        if not any(w.casefold() in vocabulary for w in _WORD.findall(finding.value)):
            return False  # the usual case: no word of the finding occurs in any phrase
        lo, hi = max(0, finding.start - chars), min(len(text), finding.end + chars)
        words = [(m.start(), m.end(), m.group().casefold()) for m in _WORD.finditer(text, lo, hi)]
        k = next((i for i, w in enumerate(words) if w[1] > finding.start), len(words))
        for i in range(max(0, k - most + 1), min(k + 1, len(words))):
            if words[i][0] > finding.start:
                break
            key = words[i][2]
            for j in range(i, min(len(words), i + most)):
                key = key if j == i else f"{key} {words[j][2]}"
                if words[j][1] >= finding.end and key in phrases:
                    return True
        return False

    def tag(self, kind: str, value: str) -> str:
        message = f"{kind}|{normalize(kind, value)}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).hexdigest()
        return f"<{kind}_{digest[: self._tag_chars]}>"

    def _secret_value(self, key: str, value: str) -> str | None:
        return self.tag("SECRET", value) if value and _SECRET_KEYS.search(key) else None


def _walk(obj: Any, scrub: Callable[[str], str], by_key: Callable[[str, str], str | None]) -> Any:
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {k: _value(k, v, scrub, by_key) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_walk(v, scrub, by_key) for v in obj)
    return obj  # numbers, booleans, None: nothing to find in them


def _value(key: Any, value: Any, scrub: Callable[[str], str], by_key: Any) -> Any:
    if isinstance(key, str) and isinstance(value, str):
        whole = by_key(key, value)
        if whole is not None:
            return whole
    return _walk(value, scrub, by_key)


def normalize(kind: str, value: str) -> str:
    """The form that is hashed, so that spellings of one value share a tag."""
    text = unicodedata.normalize("NFKC", value)
    if kind in ("CREDIT_CARD", "PHONE", "US_SSN"):
        return "".join(c for c in text if c.isdigit() or c == "+")
    if kind in ("IBAN", "MAC_ADDRESS", "US_DRIVER_LICENSE"):
        return re.sub(r"[\s:.-]", "", text).upper()
    if kind in ("SECRET", "CREDENTIALS"):
        return text
    return " ".join(text.split()).casefold()


_DIGIT = re.compile(r"\d")
_WORD = re.compile(r"\w+")  # "Joe's" is "joe" "s" on both sides of the comparison


def _phrase_set(phrases: Iterable[str]) -> tuple[frozenset[str], int, int, frozenset[str]]:
    """Allowlisted phrases as casefolded words joined by one space; the most words and the most
    characters in one; every word in them."""
    keys = {" ".join(w.casefold() for w in _WORD.findall(p)) for p in phrases}
    keys.discard("")
    most = max((k.count(" ") + 1 for k in keys), default=0)
    chars = max((len(k) for k in keys), default=0)
    return frozenset(keys), most, chars, frozenset(" ".join(keys).split())
