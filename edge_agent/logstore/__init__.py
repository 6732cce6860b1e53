"""The interaction log: every agent turn, sealed at rest, crash-safe and bounded.

Encryption scheme (envelope keys, AES-256-GCM throughout)::

    master key (32 B) ── from the OS keyring, scrypt(passphrase, salt), or a 0600 key file
      └─ wraps ─► data key (32 B, random), one per period (log_period_days), table `keys`:
                  wrapped = nonce ‖ AESGCM(master).encrypt(data key,
                            ad = "edge-agent/log/data-key/1|key_id|period|master_kid")
           └─ seals ─► interactions.body     = nonce ‖ GCM(JSON{result, messages}, ad_body)
                       interactions.feedback = nonce ‖ GCM(JSON comment, ad_feedback)
                       toolsets.body         = nonce ‖ GCM(JSON tool schemas, ad_schemas)

    ad_body     = JSON["edge-agent/log", fmt, "interactions", "body", id, ts, period, key_id,
                       model, adapter, route, outcome, failure, steps, tool_calls, latency_ms,
                       prompt_tokens, completion_tokens, size]
    ad_feedback = JSON["edge-agent/log", fmt, "interactions", "feedback", id, rating]
    ad_schemas  = "edge-agent/log|fmt|toolsets|schemas|len:fingerprint"

A turn names its tool set by fingerprint (``result.toolset``); the schemas are sealed once per
fingerprint and period, under that period's data key (``toolsets.py``), so they are shredded
with the period's records and a later period seals its own copy.

Nonces are 96 random bits (a data key seals far fewer than the 2^32 messages that allows).
The associated data binds each ciphertext to its record id, table, column and format
version (``fmt``, stored in every row), so a ciphertext copied to another row or column
fails; it also binds the plaintext metadata, which stays queryable (timestamps, ids, route,
sizes, outcome) but cannot be edited unnoticed. ``synced``/``synced_at`` are bookkeeping and
not bound. ``master_kid`` is an HMAC fingerprint of the master key, so a wrong key is told
apart from a damaged log before anything is written.

Key lifecycle: rotating the master key re-wraps the data keys (records are untouched);
retention deletes a period's wrapped data key first (crypto-shredding: its records are
unreadable from that commit on), then purges the rows; ``secure_delete`` zeroes freed pages
and a WAL checkpoint truncates old copies. The disk budget evicts the oldest synced records
first and unsynced ones only when nothing else is left; both are counted for `log status`.
"""

from __future__ import annotations

from edge_agent.logstore.config import LogConfig
from edge_agent.logstore.keys import (
    FileKeySource,
    KeyringKeySource,
    KeySource,
    PassphraseKeySource,
    keyring_available,
)
from edge_agent.logstore.lifecycle import Eviction, LogStatus, PeriodStatus, Rotation
from edge_agent.logstore.store import LogStore, Pending
from edge_agent.logstore.verify import BadRecord, VerifyReport, verify, verify_log
from edge_agent.logstore.writer import BatchWriter

__all__ = [
    "BadRecord",
    "BatchWriter",
    "Eviction",
    "FileKeySource",
    "KeySource",
    "KeyringKeySource",
    "LogConfig",
    "LogStatus",
    "LogStore",
    "PassphraseKeySource",
    "Pending",
    "PeriodStatus",
    "Rotation",
    "VerifyReport",
    "keyring_available",
    "open_log",
    "verify",
    "verify_log",
]


def open_log(settings: object, **overrides: object) -> LogStore:
    """The log the settings describe (``settings.log_enabled`` is the caller's to check)."""
    return LogStore(LogConfig.from_settings(settings, **overrides))
