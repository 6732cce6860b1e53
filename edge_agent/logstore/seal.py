"""Sealing one log row: the payload encoding, its associated data, AES-256-GCM."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import TypeAdapter

from edge_agent.errors import SealError  # re-exported: callers catch it here
from edge_agent.logstore.keys import NONCE_BYTES
from edge_agent.types import AgentResult, Message

FORMAT = 1  # the layout of the payload and of its associated data; stored in every row
TABLE = "interactions"
# Plaintext copies of sealed values, for queries. The sealed body holds the originals, so an
# edited copy is caught on every read without binding each one into the associated data.
METADATA = (
    "ts",
    "period",
    "model",
    "adapter",
    "route",
    "outcome",
    "failure",
    "steps",
    "tool_calls",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "size",
)
INSERT_COLUMNS = ("id", "key_id", *METADATA, "fmt", "body")
_MESSAGES = TypeAdapter(list[Message])
_TAG_BYTES = 16


class Shredded(SealError):
    """The record's data key was deleted: unreadable by design, purged soon."""


def associated_data(fmt: int, column: str, record_id: str, *extra: str | None) -> bytes:
    # JSON keeps the fields unambiguous: no separator inside a value can shift them.
    fields = ["edge-agent/log", fmt, TABLE, column, record_id, *extra]
    return json.dumps(fields, separators=(",", ":")).encode()


def seal(aead: AESGCM, plaintext: bytes, ad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)  # random 96-bit nonces: far below 2^32 seals per data key
    return nonce + aead.encrypt(nonce, plaintext, ad)


def unseal(aead: AESGCM, blob: Any, ad: bytes) -> bytes:
    if not isinstance(blob, bytes) or len(blob) < NONCE_BYTES + _TAG_BYTES:
        raise SealError("the sealed value is missing or truncated")
    try:
        return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)
    except InvalidTag as exc:
        raise SealError("authentication failed (tampered, moved or damaged)") from exc


def encode_body(ts: float, period: str, result: AgentResult, messages: Sequence[Message]) -> bytes:
    return b'{"ts":%r,"period":"%b","result":%b,"messages":%b}' % (
        ts,
        period.encode(),  # our own "2025-06-12/7d": nothing to escape
        result.model_dump_json().encode(),
        _MESSAGES.dump_json(list(messages)),
    )


def metadata(ts: float, period: str, result: AgentResult, size: int) -> tuple[Any, ...]:
    """Values for ``METADATA``, derived from what the body seals."""
    usage = result.usage
    return (
        ts,
        period,
        result.model,
        result.adapter,
        result.route,
        result.outcome,
        result.failure,
        result.steps,
        len(result.tool_calls),
        float(result.latency_ms),  # REAL column: an int would read back as a float
        usage.prompt_tokens,
        usage.completion_tokens,
        size,
    )


def body_ad(fmt: int, record_id: str) -> bytes:
    # Length-prefixed id, last: cheaper than JSON on the hot path and just as unambiguous.
    rid = record_id.encode()
    return b"edge-agent/log|%d|%b|body|%d:%b" % (fmt, TABLE.encode(), len(rid), rid)


def sealed_row(
    aead: AESGCM,
    key_id: str,
    period: str,
    *,
    ts: float,
    result: AgentResult,
    messages: Sequence[Message],
) -> tuple[Any, ...]:
    """Values for ``INSERT_COLUMNS``."""
    body = encode_body(ts, period, result, messages)
    ad = body_ad(FORMAT, result.id)
    return (result.id, key_id, *metadata(ts, period, result, len(body)), FORMAT,
            seal(aead, body, ad))  # fmt: skip


def open_row(aead: AESGCM, row: Mapping[str, Any]) -> tuple[AgentResult, list[Message]]:
    """The sealed body of ``row``, checked against the row's id and plaintext metadata."""
    body = unseal(aead, row["body"], body_ad(row["fmt"], row["id"]))
    try:
        data = json.loads(body)
        result = AgentResult.model_validate(data["result"])
        messages = _MESSAGES.validate_python(data["messages"])
        sealed = metadata(data["ts"], data["period"], result, len(body))
    except (ValueError, KeyError, TypeError) as exc:
        raise SealError(f"the payload does not parse: {exc}") from exc
    if result.id != row["id"]:
        raise SealError("the payload belongs to another record")
    edited = [name for name, value in zip(METADATA, sealed, strict=True) if row[name] != value]
    if edited:
        raise SealError(f"plaintext column(s) {', '.join(edited)} differ from the sealed copy")
    return result, messages


def feedback_ad(fmt: int, record_id: str, rating: str | None) -> bytes:
    return associated_data(fmt, "feedback", record_id, rating)
