"""The sync protocol's envelope: what a device sends and what the host answers.

The device and the host share this module and nothing else of each other. A batch is canonical
JSON (sorted keys, no spaces), one anonymized ``Interaction`` per record, plus the schemas of
the tool sets those records name (``toolsets``: fingerprint -> schemas, verbatim: tool and
argument names are what the host trains on), gzip-compressed on the wire; its idempotency key
is a hash of those bytes, so rebuilding the same batch after a crash gives the same key.
Every number on the wire is finite: JSON has no NaN or Infinity, and a host that took
Python's extensions (``NaN``, ``Infinity``, ``1e999``) would store what no reader can load
back.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.types import Interaction

PROTOCOL = 1
KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = r"^[A-Za-z0-9_-]{16,128}$"
MAX_ID_CHARS = 128
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
TOOLSET_PATTERN = r"^[0-9a-f]{32}$"  # edge_agent.tools.fingerprint
TOOLSET = re.compile(TOOLSET_PATTERN)
ToolSchemas = list[dict[str, Any]]
_MAX_FLOAT_INT = 2**1024  # from here on an integer becomes inf as a float


class Limits(BaseModel):
    """What the host accepts; the device packs its batches to fit."""

    max_body_bytes: int  # on the wire, compressed
    max_decoded_bytes: int
    max_batch_records: int


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=16, max_length=256)
    # What the device pinned: a TLS-terminating middlebox would show the host another one.
    cert_sha256: str = Field(pattern=_HEX64.pattern)


class EnrollResponse(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)  # the device reads it: finite numbers only

    device_id: str
    credential: str  # "<device_id>.<secret>"; the host keeps only a hash of the secret
    expires_at: float
    cert_sha256: str
    limits: Limits
    trusted_root: dict[str, Any] | None = None  # the adapter repository's root of trust


class WireBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    protocol: Literal[1]
    records: list[Interaction] = Field(min_length=1)
    # The schemas of every tool set the records name (result.toolset), and of no other: the
    # host rebuilds each skill's tools from these alone. Absent in batches of older devices.
    toolsets: dict[Annotated[str, Field(pattern=TOOLSET_PATTERN)], ToolSchemas] = Field(
        default_factory=dict
    )

    @field_validator("records")
    @classmethod
    def _ids(cls, records: list[Interaction]) -> list[Interaction]:
        ids = [r.id for r in records]
        if any(not i or len(i) > MAX_ID_CHARS for i in ids):
            raise ValueError(f"record ids must be 1..{MAX_ID_CHARS} characters")
        if len(set(ids)) != len(ids):
            raise ValueError("a record id occurs twice in the batch")
        return records

    @model_validator(mode="after")
    def _toolsets_named(self) -> WireBatch:
        named = {r.result.toolset for r in self.records if r.result.toolset is not None}
        if missing := sorted(named - set(self.toolsets)):
            raise ValueError(f"records name tool set(s) {missing} without their schemas")
        if unnamed := sorted(set(self.toolsets) - named):
            raise ValueError(f"tool set(s) {unnamed} are named by no record of the batch")
        return self


class BatchResult(BaseModel):
    """The host's answer to a batch; a replay returns the first answer unchanged."""

    model_config = ConfigDict(allow_inf_nan=False)

    key: str
    received: int
    stored: int
    duplicates: int  # records the host had from an earlier batch
    received_at: float
    replayed: bool = Field(False, exclude=True)  # set by the client from the answer's header


def encode_record(item: Interaction) -> bytes:
    return _canonical(item.model_dump(mode="json", exclude={"synced"}))


def encode_toolsets(toolsets: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes:
    return _canonical(dict(sorted(toolsets.items())))


def batch_body(parts: Sequence[bytes], toolsets: bytes = b"") -> bytes:
    """The canonical batch from encoded records and tool sets (`encode_toolsets`; none: the
    batch of an older device, byte for byte); what the key and the host's hash cover."""
    extra = b',"toolsets":%b' % toolsets if toolsets and toolsets != b"{}" else b""
    return b'{"protocol":%d,"records":[%b]%b}' % (PROTOCOL, b",".join(parts), extra)


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compress(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=6, mtime=0)  # mtime=0: same bytes on every retry


def batch_key(body: bytes) -> str:
    return "b1_" + hashlib.sha256(body).hexdigest()


def fingerprint(der: bytes) -> str:
    """The SHA-256 of a DER certificate, lower-case hex: what a device pins."""
    return hashlib.sha256(der).hexdigest()


def normalize_pin(text: str) -> str:
    """Accepts ``sha256:AB:CD:…``, ``AB:CD:…`` or plain hex; returns plain lower-case hex."""
    pin = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if not _HEX64.match(pin):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits)")
    return pin


class _NonFinite:
    """Stands in for a number that is not finite while a body is scanned."""


_NON_FINITE = _NonFinite()


def _number(text: str) -> object:
    value = float(text)
    return value if math.isfinite(value) else _NON_FINITE


def _integer(text: str) -> object:
    try:
        value = int(text)
    except ValueError:  # past Python's digit limit (4300): far past any float too
        return _NON_FINITE
    return value if abs(value) < _MAX_FLOAT_INT else _NON_FINITE


def non_finite_records(body: bytes) -> list[int] | None:
    """None when every number in the JSON `body` is finite; else the indices of the batch's
    records that hold one (empty when it sits outside them). A body that is not JSON is
    None here: the schema check reports it."""
    found = False

    def flag(value: object) -> object:
        nonlocal found
        found = found or value is _NON_FINITE
        return value

    try:
        data = json.loads(
            body,
            parse_constant=lambda _: flag(_NON_FINITE),  # NaN, Infinity, -Infinity
            parse_float=lambda t: flag(_number(t)),
            parse_int=lambda t: flag(_integer(t)),
        )
    except (ValueError, RecursionError):
        return None
    if not found:
        return None
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list):
        return []
    return [i for i, record in enumerate(records) if _holds_non_finite(record)]


def _holds_non_finite(value: object) -> bool:
    stack = [value]
    while stack:  # no recursion: the body's nesting is the sender's choice
        item = stack.pop()
        if item is _NON_FINITE:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
