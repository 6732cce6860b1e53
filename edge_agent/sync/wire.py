"""The sync protocol's envelope: what a device sends and what the host answers.

The device and the host share this module and nothing else of each other. A batch is canonical
JSON (sorted keys, no spaces), one anonymized ``Interaction`` per record, gzip-compressed on the
wire; its idempotency key is a hash of those bytes, so rebuilding the same batch after a crash
gives the same key.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.types import Interaction

PROTOCOL = 1
KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = r"^[A-Za-z0-9_-]{16,128}$"
MAX_ID_CHARS = 128
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


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

    @field_validator("records")
    @classmethod
    def _ids(cls, records: list[Interaction]) -> list[Interaction]:
        ids = [r.id for r in records]
        if any(not i or len(i) > MAX_ID_CHARS for i in ids):
            raise ValueError(f"record ids must be 1..{MAX_ID_CHARS} characters")
        if len(set(ids)) != len(ids):
            raise ValueError("a record id occurs twice in the batch")
        return records


class BatchResult(BaseModel):
    """The host's answer to a batch; a replay returns the first answer unchanged."""

    key: str
    received: int
    stored: int
    duplicates: int  # records the host had from an earlier batch
    received_at: float
    replayed: bool = Field(False, exclude=True)  # set by the client from the answer's header


def encode_record(item: Interaction) -> bytes:
    data = item.model_dump(mode="json", exclude={"synced"})
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def batch_body(parts: Sequence[bytes]) -> bytes:
    """The canonical batch from encoded records; what the key and the host's hash cover."""
    return b'{"protocol":%d,"records":[%b]}' % (PROTOCOL, b",".join(parts))


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
