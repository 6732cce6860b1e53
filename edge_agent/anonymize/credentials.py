"""Secrets: credentials in URLs, API keys with a known prefix, values after a password/token
cue, and long high-entropy tokens."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator

from edge_agent.anonymize.base import Finding, found

_URL_USERINFO = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://([^\s/:@]+:[^\s/@]+)@")
_KNOWN = re.compile(
    r"(?<![\w-])(?:"
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key ids
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google
    r"|glpat-[A-Za-z0-9_-]{20,}|hf_[A-Za-z0-9]{30,}"
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
    r")"
)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
_CUE = re.compile(
    r"(?i:\b(?:password|passwd|pwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|"
    r"auth(?:orization)?|bearer|client[_-]?secret)\b[\"']?[ \t]*(?:[:=]|is)[ \t]*(?:bearer[ \t]+)?)"
    r"[\"']?([^\s\"',;]{6,})"
)
_TOKEN = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_=-]{24,}(?![\w+/=-])")


_CUE_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "bearer")


def find_secrets(text: str) -> Iterator[Finding]:
    if "://" in text:
        for match in _URL_USERINFO.finditer(text):
            yield found("CREDENTIALS", text, *match.span(1))
    for pattern in (_KNOWN, _PEM):
        for match in pattern.finditer(text):
            yield found("SECRET", text, *match.span())
    lowered = text.lower()
    if any(word in lowered for word in _CUE_WORDS):
        for match in _CUE.finditer(text):
            yield found("SECRET", text, *match.span(1))
    for match in _TOKEN.finditer(text):
        if looks_random(match.group()):
            yield found("SECRET", text, *match.span())


def looks_random(token: str) -> bool:
    """Mixed upper, lower and digits with high character entropy: keys, not words or ids.

    Lowercase hex ids (``turn_3f2a...``, git hashes) are left alone: they are structure,
    and a real hex secret is caught by its cue ("token=", "api_key:") instead."""
    classes = (any(c.isupper() for c in token), any(c.islower() for c in token))
    if not all(classes) or sum(c.isdigit() for c in token) < 2:
        return False
    counts = Counter(token)
    entropy = -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())
    return entropy >= 4.0
