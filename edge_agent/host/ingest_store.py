"""The host's SQLite store: enrollment tokens, devices, batches (for idempotency), records,
and the tool sets records name (fingerprint -> schemas, kept once, shared by every device:
a fingerprint is a hash of its schemas, so no device can change what another's names).

Every row of device data carries its ``device_id`` and every query is scoped by it, so one
device can neither read nor overwrite another's records, even with the same record ids or
idempotency keys. Secrets (tokens, credentials) are kept only as SHA-256 hashes: they are
random 192+ bit values, so a fast hash is enough. ``secure_delete`` zeroes what ``forget``
and retention remove.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.sync.wire import BatchResult

DAY_S = 86_400.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY, created REAL NOT NULL, expires REAL NOT NULL,
    used_at REAL, device_id TEXT);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    device_id TEXT NOT NULL, key TEXT NOT NULL, body_sha256 TEXT NOT NULL,
    received REAL NOT NULL, result TEXT NOT NULL, PRIMARY KEY (device_id, key));
CREATE TABLE IF NOT EXISTS records (
    device_id TEXT NOT NULL, id TEXT NOT NULL, received REAL NOT NULL,
    recorded_at REAL NOT NULL, batch_key TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (device_id, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_received ON records (received);
CREATE INDEX IF NOT EXISTS batches_received ON batches (received);
CREATE TABLE IF NOT EXISTS toolsets (
    fingerprint TEXT PRIMARY KEY, first_seen REAL NOT NULL, schemas TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    device_id TEXT NOT NULL, day TEXT NOT NULL, records INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (device_id, day));
"""
_DEVICE_TABLES = ("records", "batches", "usage", "tokens")
# Older devices logged no skill: their records are the built-in home skill's.
DEFAULT_SKILL = "home"
_SKILL = f"coalesce(json_extract(body, '$.result.skill'), '{DEFAULT_SKILL}')"


class TokenRefused(Exception):
    """The enrollment token is unknown, used or expired (the message says which)."""


class KeyConflict(Exception):
    """The idempotency key was used before for another body."""


class ToolsetConflict(Exception):
    """A batch brought other schemas for a fingerprint the host already keeps."""


class QuotaExceeded(Exception):
    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Quota:
    records_per_day: int = 100_000
    bytes_per_day: int = 256 * 2**20


@dataclass(frozen=True)
class Incoming:
    """A validated batch: (id, recorded_at, JSON) per record, and what the wire carried."""

    device_id: str
    key: str
    body_sha256: str
    wire_bytes: int
    records: Sequence[tuple[str, float, str]]
    # fingerprint -> the schemas' canonical JSON (checked against the fingerprint already)
    toolsets: Mapping[str, str] = field(default_factory=dict)


def _owner_only(db: Path) -> None:
    """The database (credential hashes, every device's records) readable by its owner alone.
    SQLite gives the -wal, -shm and -journal files the database file's mode, so creating it
    0600 covers those; files from an older version are chmod'ed."""
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{db}{suffix}", 0o600)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class IngestStore:
    """Thread-safe: one connection behind a lock (SQLite writes one at a time anyway)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _owner_only(path)
        self.path, self.clock = path, clock
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")  # an acknowledged batch survives a crash
        self.conn.execute("PRAGMA secure_delete = ON")
        self.conn.execute("PRAGMA busy_timeout = 10000")
        self.conn.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # -- enrollment ---------------------------------------------------------------------------
    def create_token(self, ttl_s: float) -> str:
        token = "et_" + secrets.token_urlsafe(24)
        now = self.clock()
        with self._txn() as c:
            c.execute(
                "INSERT INTO tokens (hash, created, expires) VALUES (?, ?, ?)",
                (_hash(token), now, now + ttl_s),
            )
        return token

    def redeem(self, token: str, credential_ttl_s: float) -> tuple[str, str, float]:
        """Spend `token` on a new device: (device id, credential, credential expiry)."""
        now = self.clock()
        device_id = "dev_" + secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        expires = now + credential_ttl_s
        with self._txn() as c:
            row = c.execute(
                "SELECT expires, used_at FROM tokens WHERE hash = ?", (_hash(token),)
            ).fetchone()
            if row is None:
                raise TokenRefused("unknown enrollment token")
            if row[1] is not None:
                raise TokenRefused("this enrollment token was used already: ask for a new one")
            if row[0] < now:
                raise TokenRefused("this enrollment token has expired: ask for a new one")
            c.execute(
                "UPDATE tokens SET used_at = ?, device_id = ? WHERE hash = ?",
                (now, device_id, _hash(token)),
            )
            c.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?)", (device_id, _hash(secret), now, expires)
            )
        return device_id, f"{device_id}.{secret}", expires

    def authenticate(self, credential: str) -> str | None:
        """The device a credential belongs to, or None if forged, expired or forgotten."""
        device_id, _, secret = credential.partition(".")
        with self.lock:
            row = self.conn.execute(
                "SELECT secret_hash, expires FROM devices WHERE id = ?", (device_id,)
            ).fetchone()
        if row is None or not secret:
            return None
        if not hmac.compare_digest(row[0], _hash(secret)) or row[1] < self.clock():
            return None
        return device_id

    # -- batches ------------------------------------------------------------------------------
    def ingest(self, batch: Incoming, quota: Quota) -> tuple[BatchResult, bool]:
        """Store a batch once: (the result, whether it replays an earlier one)."""
        now = self.clock()
        with self._txn() as c:
            row = c.execute(
                "SELECT body_sha256, result FROM batches WHERE device_id = ? AND key = ?",
                (batch.device_id, batch.key),
            ).fetchone()
            if row is not None:
                if not hmac.compare_digest(row[0], batch.body_sha256):
                    raise KeyConflict(f"idempotency key {batch.key} was used for another body")
                return BatchResult.model_validate_json(row[1]), True
            have = self._existing(c, batch.device_id, [r[0] for r in batch.records])
            new = [r for r in batch.records if r[0] not in have]
            self._check_quota(c, batch, len(new), quota, now)
            self._keep_toolsets(c, batch.toolsets, now)
            c.executemany(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)",
                [(batch.device_id, rid, now, ts, batch.key, body) for rid, ts, body in new],
            )
            result = BatchResult(
                key=batch.key,
                received=len(batch.records),
                stored=len(new),
                duplicates=len(have),
                received_at=now,
            )
            c.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?)",
                (batch.device_id, batch.key, batch.body_sha256, now, result.model_dump_json()),
            )
        return result, False

    @staticmethod
    def _existing(c: sqlite3.Connection, device_id: str, ids: list[str]) -> set[str]:
        marks = ",".join("?" * len(ids))
        sql = f"SELECT id FROM records WHERE device_id = ? AND id IN ({marks})"
        return {r[0] for r in c.execute(sql, (device_id, *ids))}

    @staticmethod
    def _keep_toolsets(c: sqlite3.Connection, toolsets: Mapping[str, str], now: float) -> None:
        """Each fingerprint's schemas once; the first body stays, another one is refused."""
        for fp, schemas in toolsets.items():
            row = c.execute("SELECT schemas FROM toolsets WHERE fingerprint = ?", (fp,)).fetchone()
            if row is None:
                c.execute("INSERT INTO toolsets VALUES (?, ?, ?)", (fp, now, schemas))
            elif row[0] != schemas:
                raise ToolsetConflict(f"tool set {fp} is stored with other schemas")

    @staticmethod
    def _check_quota(
        c: sqlite3.Connection, batch: Incoming, records: int, quota: Quota, now: float
    ) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        row = c.execute(
            "SELECT records, bytes FROM usage WHERE device_id = ? AND day = ?",
            (batch.device_id, day),
        ).fetchone() or (0, 0)
        if row[0] + records > quota.records_per_day or row[1] + batch.wire_bytes > (
            quota.bytes_per_day
        ):
            raise QuotaExceeded(
                f"daily quota reached ({quota.records_per_day} records, "
                f"{quota.bytes_per_day} bytes): try again tomorrow (UTC)",
                retry_after_s=DAY_S - now % DAY_S,
            )
        c.execute(
            "INSERT INTO usage VALUES (?, ?, ?, ?) ON CONFLICT (device_id, day) DO UPDATE SET "
            "records = records + excluded.records, bytes = bytes + excluded.bytes",
            (batch.device_id, day, records, batch.wire_bytes),
        )

    def batch_result(self, device_id: str, key: str) -> BatchResult | None:
        with self.lock:
            row = self.conn.execute(
                "SELECT result FROM batches WHERE device_id = ? AND key = ?", (device_id, key)
            ).fetchone()
        return None if row is None else BatchResult.model_validate_json(row[0])

    # -- reading and forgetting -----------------------------------------------------------------
    def records(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """Stored records, oldest first: device_id, id, received, recorded_at, body (JSON)."""
        sql = "SELECT device_id, id, received, recorded_at, body FROM records"
        args: tuple[str, ...] = ()
        if device_id is not None:
            sql, args = sql + " WHERE device_id = ?", (device_id,)
        with self.lock:
            rows = self.conn.execute(sql + " ORDER BY received, recorded_at", args).fetchall()
        keys = ("device_id", "id", "received", "recorded_at", "body")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def toolset_schemas(self, fingerprint: str) -> list[dict[str, Any]] | None:
        """The schemas a tool set's fingerprint stands for, or None if no record brought them."""
        with self.lock:
            row = self.conn.execute(
                "SELECT schemas FROM toolsets WHERE fingerprint = ?", (fingerprint,)
            ).fetchone()
        return None if row is None else list(json.loads(row[0]))

    def toolsets(self) -> dict[str, list[dict[str, Any]]]:
        """Every stored tool set: fingerprint -> schemas, first seen first."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT fingerprint, schemas FROM toolsets ORDER BY first_seen, fingerprint"
            ).fetchall()
        return {fp: list(json.loads(schemas)) for fp, schemas in rows}

    def skills(self) -> dict[str, int]:
        """Records per skill (the skill is in each record's body; none logged: home)."""
        sql = f"SELECT {_SKILL}, count(*) FROM records GROUP BY 1 ORDER BY 2 DESC, 1"
        with self.lock:
            rows = self.conn.execute(sql).fetchall()
        return {str(skill): int(n) for skill, n in rows}

    def devices(self) -> list[dict[str, Any]]:
        sql = (
            "SELECT d.id, d.created, d.expires, count(r.id) FROM devices d "
            "LEFT JOIN records r ON r.device_id = d.id GROUP BY d.id ORDER BY d.created"
        )
        with self.lock:
            rows = self.conn.execute(sql).fetchall()
        return [dict(zip(("id", "created", "expires", "records"), r, strict=True)) for r in rows]

    def forget(self, device_id: str) -> dict[str, int]:
        """Delete everything of a device, its credential included; returns rows per table."""
        with self._txn() as c:
            gone = {
                t: c.execute(f"DELETE FROM {t} WHERE device_id = ?", (device_id,)).rowcount
                for t in _DEVICE_TABLES
            }
            gone["devices"] = c.execute("DELETE FROM devices WHERE id = ?", (device_id,)).rowcount
            gone["toolsets"] = _drop_unreferenced_toolsets(c)
        self._checkpoint()
        return gone

    def apply_retention(self, days: float) -> int:
        """Delete records and batch answers older than `days`, spent tokens and old usage."""
        now = self.clock()
        cutoff = now - days * DAY_S
        with self._txn() as c:
            deleted = c.execute("DELETE FROM records WHERE received < ?", (cutoff,)).rowcount
            _drop_unreferenced_toolsets(c)
            c.execute("DELETE FROM batches WHERE received < ?", (cutoff,))
            c.execute("DELETE FROM tokens WHERE expires < ?", (now,))
            c.execute(
                "DELETE FROM usage WHERE day < ?",
                (time.strftime("%Y-%m-%d", time.gmtime(now - 2 * DAY_S)),),
            )
        if deleted:
            self._checkpoint()
        return deleted

    def _checkpoint(self) -> None:
        # Deleted rows still sit in the WAL until a checkpoint copies and truncates it.
        with self.lock:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _drop_unreferenced_toolsets(c: sqlite3.Connection) -> int:
    """Schemas live as long as a record names them: forgetting a device or aging records out
    takes the tool sets no remaining record references."""
    return c.execute(
        "DELETE FROM toolsets WHERE fingerprint NOT IN (SELECT json_extract(body, "
        "'$.result.toolset') FROM records WHERE json_extract(body, '$.result.toolset') "
        "IS NOT NULL)"
    ).rowcount
