"""The host's ingest store: enrollment tokens, devices, batches (for idempotency), records,
and the tool sets records name (fingerprint -> schemas, kept once, shared by every device:
a fingerprint is a hash of its schemas, so no device can change what another's names).

One SQLite file by default (``IngestStore(path)``); a PostgreSQL server shared by any number
of ingest workers with ``IngestStore("postgresql://…")`` (engines: `ingest_db`). The SQL is
written once, and everything that must hold across workers is held by the database: a batch
key is claimed with ``INSERT … ON CONFLICT DO NOTHING`` on its unique key (a second worker
with the same key waits for the first to commit, then replays its answer or refuses another
body), records are inserted the same way, and quota counters are bumped with an atomic upsert
``… RETURNING`` the new totals, all in the batch's transaction: over quota, nothing is kept.

Every row of device data carries its ``device_id`` and every query is scoped by it, so one
device can neither read nor overwrite another's records, even with the same record ids or
idempotency keys. Secrets (tokens, credentials) are kept only as SHA-256 hashes: they are
random 192+ bit values, so a fast hash is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.host.ingest_db import Tx, engine_for
from edge_agent.host.ingest_db.schema import migrate
from edge_agent.sync.wire import BatchResult

DAY_S = 86_400.0
_DEVICE_TABLES = ("records", "batches", "usage", "rate", "tokens")
# Older devices logged no skill: their records are the built-in home skill's.
DEFAULT_SKILL = "home"


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
    """Per device, counted in the database: every worker of a fleet sees the same totals."""

    records_per_day: int = 100_000
    bytes_per_day: int = 256 * 2**20
    batches_per_minute: int | None = None  # None: no rate limit


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


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


class IngestStore:
    """Thread-safe. `target`: a SQLite file, or a ``postgresql://`` URL."""

    def __init__(self, target: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine_for(target)
        self.clock = clock
        try:
            migrate(self.engine)
        except BaseException:
            self.engine.close()
            raise
        skill = self.engine.json_text("body", "result.skill")
        self._skill = f"coalesce({skill}, '{DEFAULT_SKILL}')"
        self._toolset = self.engine.json_text("body", "result.toolset")

    @property
    def conn(self) -> Any:
        """The SQLite connection (tests and tools that read the file directly)."""
        return getattr(self.engine, "conn")  # noqa: B009 - a PostgreSQL engine has none

    def close(self) -> None:
        self.engine.close()

    # -- enrollment ---------------------------------------------------------------------------
    def create_token(self, ttl_s: float) -> str:
        token = "et_" + secrets.token_urlsafe(24)
        now = self.clock()
        with self.engine.transaction() as c:
            c.execute(
                "INSERT INTO tokens (hash, created, expires) VALUES (?, ?, ?)",
                (_hash(token), now, now + ttl_s),
            )
        return token

    def redeem(self, token: str, credential_ttl_s: float) -> tuple[str, str, float]:
        """Spend `token` on a new device: (device id, credential, credential expiry). The
        token's row is updated only while unused, so two workers can't both spend it."""
        now = self.clock()
        device_id = "dev_" + secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        expires = now + credential_ttl_s
        with self.engine.transaction() as c:
            spent = c.execute(
                "UPDATE tokens SET used_at = ?, device_id = ? "
                "WHERE hash = ? AND used_at IS NULL AND expires >= ? RETURNING hash",
                (now, device_id, _hash(token), now),
            ).fetchall()
            if not spent:
                raise TokenRefused(self._refusal(c, token))
            c.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?)", (device_id, _hash(secret), now, expires)
            )
        return device_id, f"{device_id}.{secret}", expires

    @staticmethod
    def _refusal(c: Tx, token: str) -> str:
        row = c.execute("SELECT used_at FROM tokens WHERE hash = ?", (_hash(token),)).fetchone()
        if row is None:
            return "unknown enrollment token"
        if row[0] is not None:
            return "this enrollment token was used already: ask for a new one"
        return "this enrollment token has expired: ask for a new one"

    def authenticate(self, credential: str) -> str | None:
        """The device a credential belongs to, or None if forged, expired or forgotten."""
        device_id, _, secret = credential.partition(".")
        rows = self.engine.read(
            "SELECT secret_hash, expires FROM devices WHERE id = ?", (device_id,)
        )
        if not rows or not secret:
            return None
        if not hmac.compare_digest(rows[0][0], _hash(secret)) or rows[0][1] < self.clock():
            return None
        return device_id

    # -- batches ------------------------------------------------------------------------------
    def ingest(self, batch: Incoming, quota: Quota) -> tuple[BatchResult, bool]:
        """Store a batch once: (the result, whether it replays an earlier one)."""
        now = self.clock()
        with self.engine.transaction() as c:
            claimed = c.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, '') "
                "ON CONFLICT (device_id, key) DO NOTHING RETURNING key",
                (batch.device_id, batch.key, batch.body_sha256, now),
            ).fetchall()
            if not claimed:  # an earlier batch, committed (a concurrent one was waited for)
                return self._replay(c, batch), True
            self._count_batch(c, batch.device_id, quota, now)
            self._keep_toolsets(c, batch.toolsets, now)
            stored = c.executemany(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (device_id, id) DO NOTHING",
                # one order for every worker: two batches sharing records can't deadlock
                sorted(
                    (batch.device_id, rid, now, ts, batch.key, b) for rid, ts, b in batch.records
                ),
            )
            self._charge(c, batch, stored, quota, now)
            result = BatchResult(
                key=batch.key,
                received=len(batch.records),
                stored=stored,
                duplicates=len(batch.records) - stored,
                received_at=now,
            )
            c.execute(
                "UPDATE batches SET result = ? WHERE device_id = ? AND key = ?",
                (result.model_dump_json(), batch.device_id, batch.key),
            )
        return result, False

    @staticmethod
    def _replay(c: Tx, batch: Incoming) -> BatchResult:
        row = c.execute(
            "SELECT body_sha256, result FROM batches WHERE device_id = ? AND key = ?",
            (batch.device_id, batch.key),
        ).fetchone()
        if not hmac.compare_digest(row[0], batch.body_sha256):
            raise KeyConflict(f"idempotency key {batch.key} was used for another body")
        return BatchResult.model_validate_json(row[1])

    @staticmethod
    def _keep_toolsets(c: Tx, toolsets: Mapping[str, str], now: float) -> None:
        """Each fingerprint's schemas once; the first body stays, another one is refused."""
        for fp, schemas in sorted(toolsets.items()):
            c.execute(
                "INSERT INTO toolsets VALUES (?, ?, ?) ON CONFLICT (fingerprint) DO NOTHING",
                (fp, now, schemas),
            )
            row = c.execute("SELECT schemas FROM toolsets WHERE fingerprint = ?", (fp,)).fetchone()
            if row[0] != schemas:
                raise ToolsetConflict(f"tool set {fp} is stored with other schemas")

    @staticmethod
    def _count_batch(c: Tx, device_id: str, quota: Quota, now: float) -> None:
        if quota.batches_per_minute is None:
            return
        (done,) = c.execute(
            "INSERT INTO rate VALUES (?, ?, 1) ON CONFLICT (device_id, minute) "
            "DO UPDATE SET batches = rate.batches + 1 RETURNING batches",
            (device_id, int(now // 60)),
        ).fetchall()[0]
        if done > quota.batches_per_minute:
            raise QuotaExceeded(
                f"rate limit reached ({quota.batches_per_minute} batches a minute)",
                retry_after_s=60 - now % 60,
            )

    @staticmethod
    def _charge(c: Tx, batch: Incoming, records: int, quota: Quota, now: float) -> None:
        """Add to today's usage; past the quota the whole batch rolls back (row-locked, so
        concurrent batches of one device, on any worker, add up exactly)."""
        total_records, total_bytes = c.execute(
            "INSERT INTO usage VALUES (?, ?, ?, ?) ON CONFLICT (device_id, day) DO UPDATE SET "
            "records = usage.records + excluded.records, bytes = usage.bytes + excluded.bytes "
            "RETURNING records, bytes",
            (batch.device_id, _day(now), records, batch.wire_bytes),
        ).fetchall()[0]
        if total_records > quota.records_per_day or total_bytes > quota.bytes_per_day:
            raise QuotaExceeded(
                f"daily quota reached ({quota.records_per_day} records, "
                f"{quota.bytes_per_day} bytes): try again tomorrow (UTC)",
                retry_after_s=DAY_S - now % DAY_S,
            )

    def batch_result(self, device_id: str, key: str) -> BatchResult | None:
        rows = self.engine.read(
            "SELECT result FROM batches WHERE device_id = ? AND key = ?", (device_id, key)
        )
        return BatchResult.model_validate_json(rows[0][0]) if rows else None

    # -- reading and forgetting -----------------------------------------------------------------
    def records(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """Stored records, oldest first: device_id, id, received, recorded_at, body (JSON)."""
        sql = "SELECT device_id, id, received, recorded_at, body FROM records"
        args: tuple[str, ...] = ()
        if device_id is not None:
            sql, args = sql + " WHERE device_id = ?", (device_id,)
        rows = self.engine.read(sql + " ORDER BY received, recorded_at, device_id, id", args)
        keys = ("device_id", "id", "received", "recorded_at", "body")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def toolset_schemas(self, fingerprint: str) -> list[dict[str, Any]] | None:
        """The schemas a tool set's fingerprint stands for, or None if no record brought them."""
        rows = self.engine.read(
            "SELECT schemas FROM toolsets WHERE fingerprint = ?", (fingerprint,)
        )
        return list(json.loads(rows[0][0])) if rows else None

    def toolsets(self) -> dict[str, list[dict[str, Any]]]:
        """Every stored tool set: fingerprint -> schemas, first seen first."""
        rows = self.engine.read(
            "SELECT fingerprint, schemas FROM toolsets ORDER BY first_seen, fingerprint"
        )
        return {fp: list(json.loads(schemas)) for fp, schemas in rows}

    def skills(self) -> dict[str, int]:
        """Records per skill (the skill is in each record's body; none logged: home)."""
        rows = self.engine.read(
            f"SELECT {self._skill}, count(*) FROM records GROUP BY 1 ORDER BY 2 DESC, 1"
        )
        return {str(skill): int(n) for skill, n in rows}

    def devices(self) -> list[dict[str, Any]]:
        rows = self.engine.read(
            "SELECT d.id, d.created, d.expires, count(r.id) FROM devices d "
            "LEFT JOIN records r ON r.device_id = d.id GROUP BY d.id ORDER BY d.created"
        )
        return [dict(zip(("id", "created", "expires", "records"), r, strict=True)) for r in rows]

    def forget(self, device_id: str) -> dict[str, int]:
        """Delete everything of a device, its credential included; returns rows per table."""
        with self.engine.transaction() as c:
            gone = {
                t: c.execute(f"DELETE FROM {t} WHERE device_id = ?", (device_id,)).rowcount
                for t in _DEVICE_TABLES
            }
            gone["devices"] = c.execute("DELETE FROM devices WHERE id = ?", (device_id,)).rowcount
            gone["toolsets"] = self._drop_unreferenced_toolsets(c)
        self.engine.after_delete()
        return gone

    def apply_retention(self, days: float) -> int:
        """Delete records and batch answers older than `days`, spent tokens and old counters."""
        now = self.clock()
        cutoff = now - days * DAY_S
        with self.engine.transaction() as c:
            deleted = int(c.execute("DELETE FROM records WHERE received < ?", (cutoff,)).rowcount)
            self._drop_unreferenced_toolsets(c)
            c.execute("DELETE FROM batches WHERE received < ?", (cutoff,))
            c.execute("DELETE FROM tokens WHERE expires < ?", (now,))
            c.execute("DELETE FROM usage WHERE day < ?", (_day(now - 2 * DAY_S),))
            c.execute("DELETE FROM rate WHERE minute < ?", (int(now // 60) - 60,))
        if deleted:
            self.engine.after_delete()
        return deleted

    def _drop_unreferenced_toolsets(self, c: Tx) -> int:
        """Schemas live as long as a record names them: forgetting a device or aging records
        out takes the tool sets no remaining record references."""
        return int(
            c.execute(
                f"DELETE FROM toolsets WHERE fingerprint NOT IN (SELECT {self._toolset} "
                f"FROM records WHERE {self._toolset} IS NOT NULL)"
            ).rowcount
        )
