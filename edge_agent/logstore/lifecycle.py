"""Key lifecycle and space: master-key rotation, retention by crypto-shredding, the disk
budget (synced records go first), and the status report."""

from __future__ import annotations

import contextlib
import math
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag

from edge_agent.logstore import keys

if TYPE_CHECKING:
    from edge_agent.logstore.keys import KeySource
    from edge_agent.logstore.store import LogStore

_HEADROOM = 0.9  # evict down to 90% of the budget so a full log does not evict on every write
_KDF_META = ("kdf", "kdf_salt", "kdf_n", "kdf_r", "kdf_p")


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
def rotate_key(store: LogStore, new_source: KeySource | None = None) -> Rotation:
    """A new master key re-wraps every data key; no record is re-encrypted or lost. Crash
    order: stage the new key, commit the re-wrapped keys, promote the new key."""
    source = new_source or store.source
    new, params = source.create()
    source.stage(new)
    skipped: list[str] = []
    with store.write_txn() as conn:
        rows = conn.execute(
            "SELECT key_id, period, wrapped FROM keys WHERE wrapped IS NOT NULL"
        ).fetchall()
        for key_id, period, wrapped in rows:
            try:
                data_key = keys.unwrap(store.master, wrapped, key_id, period)
            except (InvalidTag, ValueError):
                skipped.append(key_id)
                continue
            conn.execute(
                "UPDATE keys SET wrapped = ?, master_kid = ? WHERE key_id = ?",
                (keys.wrap(new, data_key, key_id, period), keys.kid_of(new), key_id),
            )
        conn.execute(f"DELETE FROM meta WHERE name IN ({','.join('?' * len(_KDF_META))})",
                     _KDF_META)  # fmt: skip
        store.set_meta({"master_kid": keys.kid_of(new), "key_source": source.name} | params)
    source.promote(new)
    store.master, store.source = new, source
    _checkpoint(store)  # old wrapped copies leave the WAL
    return Rotation(len(rows) - len(skipped), skipped, keys.kid_of(new))


# -- retention --------------------------------------------------------------------------------
def apply_retention(store: LogStore) -> int:
    """Shred the keys of periods past retention, then purge their records (and any left by
    an earlier crash between the two). Returns the records purged."""
    days = store.config.retention_days
    if days is not None:
        cutoff = store.clock() - days * 86_400
        with store.write_txn() as conn:
            ids = [r[0] for r in conn.execute(
                "SELECT key_id FROM keys WHERE shredded IS NULL AND ends <= ?", (cutoff,)
            )]  # fmt: skip
            shred(store, ids)
    with store.write_txn() as conn:
        purged = conn.execute(
            "DELETE FROM interactions WHERE key_id IN "
            "(SELECT key_id FROM keys WHERE shredded IS NOT NULL)"
        ).rowcount
        store.bump("expired", purged)
    if purged:
        _reclaim(store)
    return purged


def shred(store: LogStore, key_ids: list[str]) -> None:
    """Delete data keys (inside a write transaction): their records become unreadable."""
    now = store.clock()
    store.conn.executemany(
        "UPDATE keys SET wrapped = NULL, shredded = ? WHERE key_id = ?",
        [(now, key_id) for key_id in key_ids],
    )
    store.bump("shredded_keys", len(key_ids))
    for key_id in key_ids:
        store.forget_key(key_id)


# -- disk budget ------------------------------------------------------------------------------
def used_bytes(store: LogStore) -> int:
    pages = store.pragma("page_count") - store.pragma("freelist_count")
    return pages * store.pragma("page_size")


def enforce_budget(store: LogStore) -> Eviction:
    """Oldest synced records first; unsynced ones only when no synced one is left."""
    budget = store.config.budget_bytes
    if not budget or used_bytes(store) <= budget:
        return Eviction()
    target = int(budget * _HEADROOM)
    done = Eviction(synced=_evict_until(store, target, synced=True))
    if used_bytes(store) > target:
        done.unsynced = _evict_until(store, target, synced=False)
    with store.write_txn() as conn:
        used = {r[0] for r in conn.execute("SELECT DISTINCT key_id FROM interactions")}
        ended = conn.execute(
            "SELECT key_id FROM keys WHERE shredded IS NULL AND ends <= ?", (store.clock(),)
        )
        shred(store, [r[0] for r in ended if r[0] not in used])
    _reclaim(store)
    return done


def _evict_until(store: LogStore, target: int, *, synced: bool) -> int:
    total = 0
    while (used := used_bytes(store)) > target:
        count = store.conn.execute("SELECT count(*) FROM interactions").fetchone()[0]
        per_row = used / max(count, 1)
        deleted = evict(store, synced=synced, count=max(16, math.ceil((used - target) / per_row)))
        if not deleted:
            break
        total += deleted
    return total


def evict(store: LogStore, *, synced: bool, count: int) -> int:
    """Delete the ``count`` oldest records with that synced flag; returns how many went."""
    with store.write_txn() as conn:
        deleted = conn.execute(
            "DELETE FROM interactions WHERE rowid IN (SELECT rowid FROM interactions "
            "WHERE synced = ? ORDER BY ts, rowid LIMIT ?)",
            (int(synced), count),
        ).rowcount
        store.bump("evicted_synced" if synced else "evicted_unsynced", deleted)
    return int(deleted)


def _reclaim(store: LogStore) -> None:
    with store.lock:
        store.conn.execute("PRAGMA incremental_vacuum")
    _checkpoint(store)


def _checkpoint(store: LogStore) -> None:
    """Fold the WAL into the database and truncate it, so shredded keys leave it too."""
    # busy readers: the next checkpoint gets it
    with store.lock, contextlib.suppress(sqlite3.OperationalError):
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


# -- status -----------------------------------------------------------------------------------
def status(store: LogStore) -> LogStatus:
    with store.lock:
        conn = store.conn
        meta = store.meta()
        counters = dict(conn.execute("SELECT name, value FROM stats").fetchall())
        counters["dropped_disk_full"] += store.pending_drops  # not yet persisted
        records, unsynced = conn.execute(
            "SELECT count(*), coalesce(sum(synced = 0), 0) FROM interactions"
        ).fetchone()
        per_key: dict[str, tuple[int, int]] = {row[0]: (row[1], row[2]) for row in conn.execute(
            "SELECT key_id, count(*), sum(synced = 0) FROM interactions GROUP BY key_id"
        )}  # fmt: skip
        periods = []
        for key_id, period, gone in conn.execute(
            "SELECT key_id, period, shredded FROM keys ORDER BY starts, created"
        ):
            n, unsent = per_key.get(key_id, (0, 0))
            periods.append(PeriodStatus(period, key_id, n, unsent, shredded=gone is not None))
        used = used_bytes(store)
    wal = store.path.with_name(store.path.name + "-wal")
    size = store.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return LogStatus(
        path=str(store.path),
        size_bytes=size,
        used_bytes=used,
        budget_bytes=store.config.budget_bytes,
        records=records,
        unsynced=unsynced,
        key_source=meta.get("key_source", "?"),
        master_kid=meta.get("master_kid", "?"),
        periods=periods,
        counters=counters,
    )
