"""SQLite: one file, one connection behind a lock (SQLite writes one at a time anyway).
``BEGIN IMMEDIATE`` takes the write lock at the start of a transaction, so several processes
on one file serialize there instead of failing half-way. ``secure_delete`` zeroes what
`forget` and retention remove, and a checkpoint moves it out of the WAL."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _owner_only(db: Path) -> None:
    """The database (credential hashes, every device's records) readable by its owner alone.
    SQLite gives the -wal, -shm and -journal files the database file's mode, so creating it
    0600 covers those; files from an older version are chmod'ed."""
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{db}{suffix}", 0o600)


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, args)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        return self.conn.executemany(sql, rows).rowcount


class SqliteEngine:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _owner_only(path)
        self.path = path
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")  # an acknowledged batch survives a crash
        self.conn.execute("PRAGMA secure_delete = ON")
        self.conn.execute("PRAGMA busy_timeout = 10000")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Tx]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Tx(self.conn)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.conn.execute(sql, args).fetchall()

    @staticmethod
    def json_text(column: str, path: str) -> str:
        return f"json_extract({column}, '$.{path}')"

    def after_delete(self) -> None:
        # Deleted rows still sit in the WAL until a checkpoint copies and truncates it.
        with self.lock:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self.lock:
            self.conn.close()
