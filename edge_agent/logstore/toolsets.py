"""Tool schemas in the log: sealed once per fingerprint and data key, named by turns.

A turn stores only its tool set's fingerprint (``result.toolset``); the schemas the model saw
are sealed in table ``toolsets`` the first time a fingerprint appears in a period, under
that period's data key. Retention and the budget shred a period's copy with its key, so
schemas live exactly as long as some record of theirs can still be read; a later period
seals its own copy on its first turn with that tool set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_agent.logstore.seal import FORMAT, SealError, seal, unseal

INSERT = "INSERT OR IGNORE INTO toolsets (fingerprint, key_id, ts, fmt, body) VALUES (?,?,?,?,?)"
SELECT = "SELECT fingerprint, key_id, fmt, body FROM toolsets"
Schemas = Sequence[Mapping[str, Any]]


def schemas_ad(fmt: int, fingerprint: str) -> bytes:
    # Binds a ciphertext to its fingerprint: schemas moved to another row fail.
    fp = fingerprint.encode()
    return b"edge-agent/log|%d|toolsets|schemas|%d:%b" % (fmt, len(fp), fp)


def sealed_row(
    aead: AESGCM, key_id: str, fingerprint: str, ts: float, schemas: Schemas
) -> tuple[Any, ...]:
    """Values for ``INSERT``."""
    body = json.dumps([dict(s) for s in schemas], separators=(",", ":"), default=str).encode()
    return (fingerprint, key_id, ts, FORMAT, seal(aead, body, schemas_ad(FORMAT, fingerprint)))


def open_schemas(aead: AESGCM, row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The schemas of a ``toolsets`` row; raises SealError if they fail or do not parse."""
    body = unseal(aead, row["body"], schemas_ad(row["fmt"], row["fingerprint"]))
    try:
        schemas = json.loads(body)
    except ValueError as exc:
        raise SealError(f"the schemas do not parse: {exc}") from exc
    if not isinstance(schemas, list) or not all(isinstance(s, dict) for s in schemas):
        raise SealError("the schemas are not a list of tool schemas")
    return schemas
