"""Schema migrations for the log, applied in order; never edit one that has shipped.

Rows carry the format version they were sealed with (``fmt``), so a migration that changes
the payload adds a new format and leaves old ciphertexts readable under their own.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from edge_agent.logstore.config import MIGRATION_SET

migrations = Migrations(MIGRATION_SET)  # config.MIGRATIONS names each one

COUNTERS = (
    "dropped_disk_full",  # records refused because the disk / page limit was full
    "evicted_synced",  # removed by the disk budget after the sync client sent them
    "evicted_unsynced",  # removed by the disk budget before they were sent
    "expired",  # removed by retention (their period's key was shredded first)
    "shredded_keys",  # data keys deleted (retention, budget, by hand)
)


@migrations()
def m001_initial(db: Database) -> None:
    db.table("meta").create({"name": str, "value": str}, pk="name")
    db.table("stats").create({"name": str, "value": int}, pk="name", not_null={"value"})
    db.table("stats").insert_all([{"name": name, "value": 0} for name in COUNTERS])
    db.table("keys").create(
        {
            "key_id": str,
            "period": str,
            "starts": float,
            "ends": float,
            "wrapped": bytes,  # NULL once shredded
            "master_kid": str,
            "created": float,
            "shredded": float,
        },
        pk="key_id",
        not_null={"period", "starts", "ends", "created"},
    )
    # One live key per period; a shredded one can be followed by a new one.
    db.execute("CREATE UNIQUE INDEX keys_live ON keys(period) WHERE shredded IS NULL")
    db.execute(
        """CREATE TABLE interactions (
            id TEXT PRIMARY KEY,
            ts REAL NOT NULL, period TEXT NOT NULL, key_id TEXT NOT NULL,
            model TEXT, adapter TEXT, route TEXT, outcome TEXT, failure TEXT,
            steps INTEGER, tool_calls INTEGER, latency_ms REAL,
            prompt_tokens INTEGER, completion_tokens INTEGER, size INTEGER,
            fmt INTEGER NOT NULL, body BLOB NOT NULL,
            rating TEXT, feedback BLOB,
            synced INTEGER NOT NULL DEFAULT 0, synced_at REAL
        )"""
    )
    db.execute("CREATE INDEX interactions_ts ON interactions(ts)")
    db.execute("CREATE INDEX interactions_unsynced ON interactions(ts) WHERE synced = 0")


@migrations()
def m002_toolsets(db: Database) -> None:
    """Tool schemas, sealed once per fingerprint and data key; turns name them by
    ``result.toolset``. Keyed by the data key too, so shredding a period shreds its copy."""
    db.execute(
        """CREATE TABLE toolsets (
            fingerprint TEXT NOT NULL, key_id TEXT NOT NULL, ts REAL NOT NULL,
            fmt INTEGER NOT NULL, body BLOB NOT NULL,
            PRIMARY KEY (fingerprint, key_id)
        ) WITHOUT ROWID"""
    )
