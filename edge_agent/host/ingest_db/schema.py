"""The ingest store's schema, written once for both engines as numbered migrations. The few
words that differ are placeholders: ``{real}`` (SQLite's REAL is 8 bytes, PostgreSQL's is 4:
a timestamp needs DOUBLE PRECISION) and ``{without_rowid}`` (a SQLite storage option).

A database records the migrations it has in ``schema_version``; opening a store applies the
missing ones in one transaction. A SQLite file from before this table exists has version 1's
tables already (``IF NOT EXISTS`` makes version 1 a no-op there)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge_agent.host.ingest_db import Engine

_WORDS = {
    "sqlite": {"real": "REAL", "without_rowid": "WITHOUT ROWID"},
    "postgresql": {"real": "DOUBLE PRECISION", "without_rowid": ""},
}
# Only one process migrates at a time: workers that start together wait here (PostgreSQL;
# SQLite's BEGIN IMMEDIATE already serializes writers).
_LOCK = {"postgresql": "SELECT pg_advisory_xact_lock(170017)"}


@dataclass(frozen=True)
class Migration:
    version: int
    why: str
    statements: tuple[str, ...]


MIGRATIONS = (
    Migration(
        1,
        "tokens, devices, batches (idempotency), records, tool sets, daily usage",
        (
            """CREATE TABLE IF NOT EXISTS tokens (
                hash TEXT PRIMARY KEY, created {real} NOT NULL, expires {real} NOT NULL,
                used_at {real}, device_id TEXT)""",
            """CREATE TABLE IF NOT EXISTS devices (
                id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, created {real} NOT NULL,
                expires {real} NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS batches (
                device_id TEXT NOT NULL, key TEXT NOT NULL, body_sha256 TEXT NOT NULL,
                received {real} NOT NULL, result TEXT NOT NULL, PRIMARY KEY (device_id, key))""",
            """CREATE TABLE IF NOT EXISTS records (
                device_id TEXT NOT NULL, id TEXT NOT NULL, received {real} NOT NULL,
                recorded_at {real} NOT NULL, batch_key TEXT NOT NULL, body TEXT NOT NULL,
                PRIMARY KEY (device_id, id)) {without_rowid}""",
            "CREATE INDEX IF NOT EXISTS records_received ON records (received)",
            "CREATE INDEX IF NOT EXISTS batches_received ON batches (received)",
            """CREATE TABLE IF NOT EXISTS toolsets (
                fingerprint TEXT PRIMARY KEY, first_seen {real} NOT NULL,
                schemas TEXT NOT NULL) {without_rowid}""",
            """CREATE TABLE IF NOT EXISTS usage (
                device_id TEXT NOT NULL, day TEXT NOT NULL, records INTEGER NOT NULL,
                bytes INTEGER NOT NULL, PRIMARY KEY (device_id, day))""",
        ),
    ),
    Migration(
        2,
        "batches per device and minute (the rate limit, counted where every worker sees it)",
        (
            """CREATE TABLE IF NOT EXISTS rate (
                device_id TEXT NOT NULL, minute INTEGER NOT NULL, batches INTEGER NOT NULL,
                PRIMARY KEY (device_id, minute))""",
        ),
    ),
)
LATEST = MIGRATIONS[-1].version


def render(sql: str, dialect: str) -> str:
    return sql.format(**_WORDS[dialect])


def migrate(engine: Engine) -> list[int]:
    """Apply the migrations this database lacks, in one transaction; the versions applied."""
    applied = []
    with engine.transaction() as c:
        if engine.name in _LOCK:
            c.execute(_LOCK[engine.name])
        c.execute(
            render(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied {real} NOT NULL, why TEXT NOT NULL)",
                engine.name,
            )
        )
        have = c.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
        for step in MIGRATIONS:
            if step.version > have:
                for statement in step.statements:
                    c.execute(render(statement, engine.name))
                c.execute(
                    "INSERT INTO schema_version VALUES (?, ?, ?)",
                    (step.version, time.time(), step.why),
                )
                applied.append(step.version)
    return applied
