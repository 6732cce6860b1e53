"""Addresses on a network: emails, IPv4/IPv6 addresses (checked by `ipaddress`), MACs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from edge_agent.anonymize.base import Finding, found

_EMAIL = re.compile(
    r"(?<![\w.+-])[\w.!#$%&'*+/=?^`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b"
)


def find_emails(text: str) -> Iterator[Finding]:
    if "@" in text:
        for match in _EMAIL.finditer(text):
            yield found("EMAIL", text, *match.span())


_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:/\d{1,3})?(?![\w:])")


def find_ips(text: str) -> Iterator[Finding]:
    if "." in text:
        for match in _IPV4.finditer(text):
            if _is_ip(match.group()):
                yield found("IP_ADDRESS", text, *match.span())
    if "::" in text or text.count(":") >= 7:
        for match in _IPV6.finditer(text):
            if ":" in match.group().strip(":") and _is_ip(match.group()):
                yield found("IP_ADDRESS", text, *match.span())


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_interface(candidate)
    except ValueError:
        return False
    return True


_MAC = re.compile(
    r"(?<![\w:-])(?:[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4})(?![\w:-])"
)


def find_macs(text: str) -> Iterator[Finding]:
    for match in _MAC.finditer(text):
        yield found("MAC_ADDRESS", text, *match.span())
