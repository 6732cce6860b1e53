"""Key lifecycle and space: master-key rotation, retention by crypto-shredding, the disk
budget (synced records go first), and the status report."""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge_agent.logstore.config import LogConfig
from edge_agent.logstore.keys import KeySource
from edge_agent.logstore.ring import KeyRing

_HEADROOM = 0.9  # evict down to 90% of the budget so a full log does not evict on every write
_KDF_META = ("kdf", "kdf_salt", "kdf_n", "kdf_r", "kdf_p")


class Log(Protocol):
    """What these operations need from a log (LogStore is one). Kept narrow so the store
    depends on this module and never the other way round."""

    @property
    def config(self) -> LogConfig: ...
    @property
    def path(self) -> Path: ...
    @property
    def conn(self) -> sqlite3.Connection: ...
    @property
    def lock(self) -> AbstractContextManager[Any]: ...
    @property
    def ring(self) -> KeyRing: ...
    @property
    def pending_drops(self) -> int: ...  # refused records not yet counted in the database
    def clock(self) -> float: ...
    def write_txn(self) -> AbstractContextManager[sqlite3.Connection]: ...
    def meta(self) -> dict[str, str]: ...
    def set_meta(self, values: Mapping[str, str]) -> None: ...
    def pragma(self, name: str) -> int: ...
    def bump(self, counter: str, n: int) -> None: ...


@dataclass
class Rotation:
    rewrapped: int  # data keys now wrapped by the new master key
    skipped: list[str]  # data keys that were already unreadable (damaged); left as they were
    master_kid: str


@dataclass
class Eviction:
    synced: int = 0
    unsynced: int = 0


@dataclass
class PeriodStatus:
    period: str
    key_id: str
    records: int
    unsynced: int
    shredded: bool


@dataclass
class LogStatus:
    path: str
    size_bytes: int  # database file + WAL
    used_bytes: int  # pages in use: what the budget counts
    budget_bytes: int | None
    records: int
    unsynced: int
    key_source: str
    master_kid: str
    periods: list[PeriodStatus] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


# -- rotation ---------------------------------------------------------------------------------
def rotate_key(log: Log, new_source: KeySource | None = None) -> Rotation:
    """A new master key re-wraps every data key; no record is re-encrypted or lost. Crash
    order: stage the new key, commit the re-wrapped keys, promote the new key."""
    staged = log.ring.stage(new_source or log.ring.source)
    with log.write_txn() as conn:
        rewrapped, skipped = log.ring.rewrap(staged)
        conn.execute(f"DELETE FROM meta WHERE name IN ({','.join('?' * len(_KDF_META))})",
                     _KDF_META)  # fmt: skip
        log.set_meta(staged.meta())
    log.ring.promote(staged)
    _checkpoint(log)  # old wrapped copies leave the WAL
    return Rotation(rewrapped, skipped, staged.kid)


# -- retention --------------------------------------------------------------------------------
def apply_retention(log: Log) -> int:
    """Shred the keys of periods past retention, then purge their records (and any left by
    an earlier crash between the two). Returns the records purged."""
    days = log.config.retention_days
    if days is not None:
        cutoff = log.clock() - days * 86_400
        with log.write_txn() as conn:
            ids = [r[0] for r in conn.execute(
                "SELECT key_id FROM keys WHERE shredded IS NULL AND ends <= ?", (cutoff,)
            )]  # fmt: skip
            shred(log, ids)
    with log.write_txn() as conn:
        purged = conn.execute(
            "DELETE FROM interactions WHERE key_id IN "
            "(SELECT key_id FROM keys WHERE shredded IS NOT NULL)"
        ).rowcount
        log.bump("expired", purged)
        _purge_toolsets(conn)
    if purged:
        _reclaim(log)
    return purged


def shred(log: Log, key_ids: list[str]) -> None:
    """Delete data keys (inside a write transaction): their records become unreadable."""
    log.ring.shred(key_ids, log.clock())
    log.bump("shredded_keys", len(key_ids))


# -- disk budget ------------------------------------------------------------------------------
def used_bytes(log: Log) -> int:
    pages = log.pragma("page_count") - log.pragma("freelist_count")
    return pages * log.pragma("page_size")


def enforce_budget(log: Log) -> Eviction:
    """Oldest synced records first; unsynced ones only when no synced one is left."""
    budget = log.config.budget_bytes
    if not budget or used_bytes(log) <= budget:
        return Eviction()
    target = int(budget * _HEADROOM)
    done = Eviction(synced=_evict_until(log, target, synced=True))
    if used_bytes(log) > target:
        done.unsynced = _evict_until(log, target, synced=False)
    with log.write_txn() as conn:
        used = {r[0] for r in conn.execute("SELECT DISTINCT key_id FROM interactions")}
        ended = conn.execute(
            "SELECT key_id FROM keys WHERE shredded IS NULL AND ends <= ?", (log.clock(),)
        )
        shred(log, [r[0] for r in ended if r[0] not in used])
        _purge_toolsets(conn)
    _reclaim(log)
    return done


def _purge_toolsets(conn: sqlite3.Connection) -> None:
    """Schemas sealed under a shredded key go with it (their records went or will)."""
    conn.execute(
        "DELETE FROM toolsets WHERE key_id IN (SELECT key_id FROM keys WHERE shredded IS NOT NULL)"
    )


def _evict_until(log: Log, target: int, *, synced: bool) -> int:
    total = 0
    while (used := used_bytes(log)) > target:
        count = log.conn.execute("SELECT count(*) FROM interactions").fetchone()[0]
        per_row = used / max(count, 1)
        deleted = evict(log, synced=synced, count=max(16, math.ceil((used - target) / per_row)))
        if not deleted:
            break
        total += deleted
    return total


def evict(log: Log, *, synced: bool, count: int) -> int:
    """Delete the ``count`` oldest records with that synced flag; returns how many went."""
    with log.write_txn() as conn:
        deleted = conn.execute(
            "DELETE FROM interactions WHERE rowid IN (SELECT rowid FROM interactions "
            "WHERE synced = ? ORDER BY ts, rowid LIMIT ?)",
            (int(synced), count),
        ).rowcount
        log.bump("evicted_synced" if synced else "evicted_unsynced", deleted)
    return int(deleted)


def _reclaim(log: Log) -> None:
    with log.lock:
        log.conn.execute("PRAGMA incremental_vacuum")
    _checkpoint(log)


def _checkpoint(log: Log) -> None:
    """Fold the WAL into the database and truncate it, so shredded keys leave it too."""
    # busy readers: the next checkpoint gets it
    with log.lock, contextlib.suppress(sqlite3.OperationalError):
        log.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


# -- status -----------------------------------------------------------------------------------
def status(log: Log) -> LogStatus:
    with log.lock:
        meta = log.meta()
        counters = dict(log.conn.execute("SELECT name, value FROM stats").fetchall())
        counters["dropped_disk_full"] += log.pending_drops  # not yet persisted
        records, unsynced = log.conn.execute(
            "SELECT count(*), coalesce(sum(synced = 0), 0) FROM interactions"
        ).fetchone()
        periods, used = _periods(log.conn), used_bytes(log)
    wal = log.path.with_name(log.path.name + "-wal")
    return LogStatus(
        path=str(log.path),
        size_bytes=log.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0),
        used_bytes=used,
        budget_bytes=log.config.budget_bytes,
        records=records,
        unsynced=unsynced,
        key_source=meta.get("key_source", "?"),
        master_kid=meta.get("master_kid", "?"),
        periods=periods,
        counters=counters,
    )


def _periods(conn: sqlite3.Connection) -> list[PeriodStatus]:
    per_key: dict[str, tuple[int, int]] = {row[0]: (row[1], row[2]) for row in conn.execute(
        "SELECT key_id, count(*), sum(synced = 0) FROM interactions GROUP BY key_id"
    )}  # fmt: skip
    periods = []
    for key_id, period, gone in conn.execute(
        "SELECT key_id, period, shredded FROM keys ORDER BY starts, created"
    ):
        n, unsent = per_key.get(key_id, (0, 0))
        periods.append(PeriodStatus(period, key_id, n, unsent, shredded=gone is not None))
    return periods
