"""How a log is opened: its config, its SQLite connection, and SQLite errors made typed."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from edge_agent.errors import LogError, LogFullError, LogIntegrityError
from edge_agent.logstore.keys import SCRYPT_N, KeySourceName

P = ParamSpec("P")
R = TypeVar("R")
# The migrations (migrations.py) as sqlite_utils records them once applied, read here with
# plain SQL: opening an up-to-date log then needs no sqlite_utils (~20 ms of every start).
MIGRATION_SET, MIGRATIONS = "edge-agent-log", frozenset({"m001_initial", "m002_toolsets"})


@dataclass(frozen=True)
class LogConfig:
    """How one log is opened; ``from_settings`` is the usual way to make one."""

    path: Path
    key_dir: Path
    key_source: KeySourceName = "auto"
    passphrase: str | None = None
    period_days: int = 7
    retention_days: int | None = 90
    budget_bytes: int | None = 256 * 2**20
    synchronous: Literal["FULL", "NORMAL"] = "FULL"  # FULL: an acked record survives power loss
    busy_timeout_ms: int = 10_000
    max_pages: int | None = None  # seam for tests: SQLITE_FULL once the file has this many pages
    scrypt_n: int = SCRYPT_N

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> LogConfig:
        passphrase = settings.log_passphrase
        values: dict[str, Any] = {
            "path": settings.log_path,
            "key_dir": settings.log_key_dir,
            "key_source": settings.log_key_source,
            "passphrase": passphrase.get_secret_value() if passphrase else None,
            "period_days": settings.log_period_days,
            "retention_days": settings.log_retention_days,
            "budget_bytes": int(settings.log_budget_mb * 2**20),
        }
        return cls(**(values | overrides))


def recorded_key_source(path: Path) -> str | None:
    """The key source a log was created with, read without opening it for writing."""
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT value FROM meta WHERE name = 'key_source'").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def is_migrated(conn: sqlite3.Connection) -> bool:
    """Whether every migration is recorded as applied (False for a new log)."""
    try:
        rows = conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ?", [MIGRATION_SET]
        ).fetchall()
    except sqlite3.OperationalError:  # no such table: nothing applied yet
        return False
    return {row[0] for row in rows} >= MIGRATIONS


def connect(config: LogConfig) -> sqlite3.Connection:
    config.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not config.path.exists():  # owner-only, like the key: the metadata is plaintext
        os.close(os.open(config.path, os.O_CREAT | os.O_WRONLY, 0o600))
    try:
        conn = sqlite3.connect(
            config.path,
            isolation_level=None,  # transactions are explicit (write_txn)
            timeout=config.busy_timeout_ms / 1000,
            check_same_thread=False,  # guarded by LogStore.lock
        )
        conn.execute(f"PRAGMA busy_timeout = {int(config.busy_timeout_ms)}")
    except sqlite3.Error as exc:
        raise LogError(f"cannot open the log at {config.path}: {exc}") from exc
    return conn


def is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)


def typed(exc: sqlite3.Error, path: Path) -> LogError:
    """The LogError a SQLite error means for the user."""
    if is_full(exc):
        return LogFullError(f"the disk holding the log at {path} is full: free some space")
    if isinstance(exc, sqlite3.OperationalError):  # locked past busy_timeout, I/O, permissions
        return LogError(f"the log at {path} cannot be used right now: {exc}")
    return LogIntegrityError(f"the log at {path} is damaged ({exc}): run `edge-agent log verify`")


def typed_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Public LogStore methods raise LogError, never a bare sqlite3 error."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise typed(exc, args[0].path) from exc  # type: ignore[attr-defined]

    return wrapper
