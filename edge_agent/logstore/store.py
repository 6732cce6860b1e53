"""The log store: open (the key is checked before anything is written), record, read."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_agent.errors import LogError, LogFullError, LogIntegrityError
from edge_agent.logstore import lifecycle, seal, toolsets
from edge_agent.logstore.config import (
    LogConfig,
    connect,
    is_full,
    is_migrated,
    typed,
    typed_errors,
)
from edge_agent.logstore.keys import KeySource
from edge_agent.logstore.ring import KeyRing, source_for
from edge_agent.types import AgentResult, Feedback, Interaction, Message

if TYPE_CHECKING:
    from sqlite_utils import Database

log = logging.getLogger(__name__)
_INSERT = "INSERT INTO interactions ({}) VALUES ({}) ON CONFLICT(id) DO NOTHING".format(
    ", ".join(seal.INSERT_COLUMNS), ", ".join("?" * len(seal.INSERT_COLUMNS))
)
DAY_S = 86_400.0
# What record_many takes: (result, messages) or (result, messages, tool schemas)
Turn = (
    tuple[AgentResult, Sequence[Message] | None]
    | tuple[AgentResult, Sequence[Message] | None, toolsets.Schemas | None]
)


@dataclass
class Pending:
    """A record on its way in; ``ts`` is when it was handed to the log."""

    result: AgentResult
    messages: Sequence[Message] = ()
    ts: float = field(default_factory=time.time)
    tools: toolsets.Schemas | None = None  # the schemas ``result.toolset`` fingerprints


class LogStore:
    """The sealed interaction log. Thread-safe; open one per process (WAL and a busy timeout
    let the agent and the sync client write from separate processes)."""

    def __init__(
        self,
        config: LogConfig,
        *,
        source: KeySource | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config = config
        self.path = config.path
        self.clock = clock
        self.lock = threading.RLock()
        self.pending_drops = 0
        self._new_period = False
        self._sealed_toolsets: set[tuple[str, str]] = set()  # (fingerprint, key_id) on disk
        self.conn = connect(config)
        try:
            self._open(source)
        except BaseException:
            self.conn.close()
            raise

    # -- opening ------------------------------------------------------------------------------
    def _open(self, source: KeySource | None) -> None:
        meta = self._read_meta()
        # the one owner of the key material; a wrong key stops here, before any write
        self.ring = KeyRing(self.conn, source or source_for(self.config, meta), meta, self.path)
        self._prepare(new=self.pragma("page_count") <= 1)
        with self.write_txn():
            if not is_migrated(self.conn):  # sqlite_utils only for a new or older log
                from edge_agent.logstore.migrations import migrations

                migrations.apply(self.db)
            self._init_meta()
        self._maintain(retention=True)

    @functools.cached_property
    def db(self) -> Database:
        """sqlite_utils over the connection, for reads and migrations (imported on first use)."""
        from sqlite_utils import Database

        return Database(self.conn, execute_plugins=False)

    @property
    def master(self) -> bytes:
        return self.ring.master

    @property
    def source(self) -> KeySource:
        return self.ring.source

    def _read_meta(self) -> dict[str, str]:
        try:
            tables = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            if self.conn.execute(tables).fetchone() is None:
                return {}
            return dict(self.conn.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise LogIntegrityError(
                f"the log at {self.path} is damaged ({exc}): `edge-agent log verify` shows "
                "the damage; move the file aside to start a new log"
            ) from exc

    def _prepare(self, *, new: bool) -> None:
        if new:  # only settable before the first table exists
            self.conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {self.config.synchronous}")
        self.conn.execute("PRAGMA secure_delete = ON")  # deleted rows and keys are zeroed
        if self.config.max_pages:
            self.conn.execute(f"PRAGMA max_page_count = {int(self.config.max_pages)}")

    def _init_meta(self) -> None:
        if "master_kid" in self.meta():  # another process created the log while we opened
            self.ring.refresh()
            return
        values = {
            "format": str(seal.FORMAT),
            "master_kid": self.ring.kid,
            "key_source": self.ring.source.name,
            "created": repr(self.clock()),
        }
        self.set_meta(values | self.ring.new_params)

    def set_meta(self, values: Mapping[str, str]) -> None:
        self.conn.executemany(
            "INSERT INTO meta(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    # -- transactions -------------------------------------------------------------------------
    @contextlib.contextmanager
    def write_txn(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so a busy peer is waited for
        (busy_timeout) instead of failing at the first write."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    def forget_key(self, key_id: str) -> None:
        self.ring.forget(key_id)

    def pragma(self, name: str) -> int:
        return int(self.conn.execute(f"PRAGMA {name}").fetchone()[0])

    def bump(self, counter: str, n: int) -> None:
        self.conn.execute("UPDATE stats SET value = value + ? WHERE name = ?", (n, counter))

    # -- writing ------------------------------------------------------------------------------
    def record(
        self,
        result: AgentResult,
        messages: Sequence[Message] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Seal and commit one turn; returns its id only once it is committed. ``tools``: the
        schemas of the toolset the model saw (``result.toolset`` is their fingerprint).

        Raises LogFullError (counted in `log status`) when the disk is full: callers that
        must keep serving catch LogError."""
        return self.write([Pending(result, messages or (), self.clock(), tools)])[0]

    def record_many(self, items: Iterable[Turn]) -> list[str]:
        """Many turns in one transaction (one fsync): all committed, or none. An item is
        (result, messages) or (result, messages, tools)."""
        now = self.clock()
        return self.write([Pending(t[0], t[1] or (), now, t[2] if len(t) > 2 else None)
                           for t in items])  # fmt: skip

    def write(self, pending: Sequence[Pending]) -> list[str]:
        with self.lock:
            try:
                self._insert(pending)
            except sqlite3.Error as exc:
                if not is_full(exc):
                    raise typed(exc, self.path) from exc
                self._insert_when_full(pending)
            self._maintain(retention=self._new_period)
        return [p.result.id for p in pending]

    def _insert(self, pending: Sequence[Pending]) -> None:
        with self.write_txn() as conn:
            live: dict[str, tuple[str, AESGCM]] = {}
            rows = [self._sealed(p, live) for p in pending]
            conn.executemany(_INSERT, rows)
            schemas = self._new_toolsets(pending, live)
            conn.executemany(toolsets.INSERT, schemas.values())
            if self.pending_drops:
                self.bump("dropped_disk_full", self.pending_drops)
        self.pending_drops = 0
        self._sealed_toolsets.update(schemas)

    def _new_toolsets(
        self, pending: Sequence[Pending], live: dict[str, tuple[str, AESGCM]]
    ) -> dict[tuple[str, str], tuple[Any, ...]]:
        """Rows for the tool sets this process has not sealed under the turn's data key yet
        (INSERT OR IGNORE covers one another process sealed)."""
        new: dict[tuple[str, str], tuple[Any, ...]] = {}
        for p in pending:
            fp = p.result.toolset
            if fp is None or p.tools is None:
                continue
            key_id, aead = live[self.period_of(p.ts)[0]]
            if (fp, key_id) not in self._sealed_toolsets and (fp, key_id) not in new:
                new[fp, key_id] = toolsets.sealed_row(aead, key_id, fp, p.ts, p.tools)
        return new

    def _sealed(self, p: Pending, live: dict[str, tuple[str, AESGCM]]) -> tuple[Any, ...]:
        period, starts, ends = self.period_of(p.ts)
        if period not in live:
            live[period] = self._live_key(period, starts, ends)
        key_id, aead = live[period]
        return seal.sealed_row(aead, key_id, period, ts=p.ts, result=p.result, messages=p.messages)

    def _live_key(self, period: str, starts: float, ends: float) -> tuple[str, AESGCM]:
        """The period's data key, made on its first record (inside the write transaction)."""
        found = self.ring.current(period)
        if found is None:
            found = self.ring.create(period, starts, ends, self.clock())
            self._new_period = True  # retention runs once this commits
        return found

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT name, value FROM meta").fetchall())

    def period_of(self, ts: float) -> tuple[str, float, float]:
        span = self.config.period_days * DAY_S
        return _period(span, (ts // span) * span)

    def _insert_when_full(self, pending: Sequence[Pending]) -> None:
        if self._make_room(2 * len(pending)):
            try:
                return self._insert(pending)
            except sqlite3.Error as exc:
                if not is_full(exc):
                    raise typed(exc, self.path) from exc
        self.pending_drops += len(pending)
        with contextlib.suppress(sqlite3.Error):  # a full disk may refuse even this
            with self.write_txn():
                self.bump("dropped_disk_full", self.pending_drops)
            self.pending_drops = 0
        raise LogFullError(
            f"the log at {self.path} is full: {len(pending)} record(s) dropped (counted in "
            "`edge-agent log status`); free disk space or lower log_budget_mb"
        )

    def _make_room(self, rows: int) -> bool:
        """Synced records may go to make room; unsynced ones are never evicted for this."""
        try:
            return lifecycle.evict(self, synced=True, count=max(64, rows)) > 0
        except sqlite3.Error:
            return False

    def _maintain(self, *, retention: bool) -> None:
        """Retention on open and when a period begins, the budget after every commit. The
        records are already committed, so a failure here is logged, never raised."""
        try:
            if retention:
                self._new_period = False
                lifecycle.apply_retention(self)
            lifecycle.enforce_budget(self)
        except (sqlite3.Error, LogError) as exc:
            log.warning("log maintenance failed (will retry): %s", exc)

    # -- reading ------------------------------------------------------------------------------
    def aead(self, key_id: str) -> AESGCM:
        """The data key ``key_id``, unwrapped; raises SealError (Shredded when deleted)."""
        return self.ring.aead(key_id)

    def decode(self, row: Mapping[str, Any]) -> Interaction:
        """A row back to an Interaction; raises SealError if any sealed part fails."""
        aead = self.aead(row["key_id"])
        result, messages = seal.open_row(aead, row)
        feedback = self._feedback(aead, row)
        return Interaction(
            result=result,
            messages=messages,
            feedback=feedback,
            recorded_at=row["ts"],
            synced=bool(row["synced"]),
        )

    def _feedback(self, aead: AESGCM, row: Mapping[str, Any]) -> Feedback | None:
        if row["feedback"] is None:
            return None if row["rating"] is None else Feedback(rating=row["rating"])
        ad = seal.feedback_ad(row["fmt"], row["id"], row["rating"])
        comment = json.loads(seal.unseal(aead, row["feedback"], ad))
        return Feedback(rating=row["rating"], comment=comment)

    @typed_errors
    def get(self, record_id: str) -> Interaction:
        row = self._row(record_id)
        try:
            return self.decode(row)
        except seal.SealError as exc:
            raise LogIntegrityError(
                f"record {record_id} cannot be read: {exc}; `edge-agent log verify` lists all"
            ) from exc

    @typed_errors
    def _row(self, record_id: str) -> dict[str, Any]:
        with self.lock:
            rows = list(self.db.query("SELECT * FROM interactions WHERE id = ?", [record_id]))
        if not rows:
            raise LogError(f"no record {record_id!r} in the log (see `edge-agent log list`)")
        return rows[0]

    @typed_errors
    def rows(
        self, *, since: float | None = None, limit: int | None = None, newest: bool = False
    ) -> list[dict]:
        """Rows with plaintext metadata, oldest first (``newest``: the last ``limit`` rows,
        still oldest first). Nothing is decrypted."""
        order = "DESC" if newest else "ASC"
        sql = f"SELECT * FROM interactions WHERE ts >= ? ORDER BY ts {order}, rowid {order}"
        params: list[Any] = [since or 0.0]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.lock:
            rows = list(self.db.query(sql, params))
        return rows[::-1] if newest else rows

    def interactions(
        self,
        *,
        since: float | None = None,
        limit: int | None = None,
        on_bad: Callable[[str, str], None] | None = None,
    ) -> Iterator[Interaction]:
        """Decrypted records, oldest first. A bad one goes to ``on_bad(id, reason)`` when
        given, else raises LogIntegrityError."""
        for row in self.rows(since=since, limit=limit):
            try:
                yield self.decode(row)
            except seal.SealError as exc:
                if on_bad is None:
                    raise LogIntegrityError(f"record {row['id']} cannot be read: {exc}") from exc
                on_bad(row["id"], str(exc))

    @typed_errors
    def toolset_schemas(self, fingerprint: str) -> list[dict[str, Any]] | None:
        """The schemas a turn's ``result.toolset`` names, from the newest readable copy; None
        when none is stored or every copy is shredded or fails (`log verify` names those)."""
        with self.lock:
            rows = list(self.db.query(
                f"{toolsets.SELECT} WHERE fingerprint = ? ORDER BY ts DESC", [fingerprint]
            ))  # fmt: skip
        for row in rows:
            with contextlib.suppress(seal.SealError):
                return toolsets.open_schemas(self.aead(row["key_id"]), row)
        return None

    # -- sync and feedback --------------------------------------------------------------------
    @typed_errors
    def unsynced(self, limit: int = 100) -> list[Interaction]:
        """The oldest records the sync client has not sent; unreadable ones are skipped."""
        with self.lock:
            rows = list(
                self.db.query(
                    "SELECT * FROM interactions WHERE synced = 0 ORDER BY ts, rowid LIMIT ?",
                    [limit],
                )
            )
        out = []
        for row in rows:
            with contextlib.suppress(seal.SealError):
                out.append(self.decode(row))
        return out

    @typed_errors
    def mark_synced(self, ids: Iterable[str]) -> int:
        """Mark records as sent; returns how many changed. Synced records go first when
        the disk budget needs room."""
        todo, changed, now = list(ids), 0, self.clock()
        with self.write_txn() as conn:
            for i in range(0, len(todo), 500):
                chunk = todo[i : i + 500]
                marks = ",".join("?" * len(chunk))
                changed += conn.execute(
                    f"UPDATE interactions SET synced = 1, synced_at = ? "
                    f"WHERE synced = 0 AND id IN ({marks})",
                    [now, *chunk],
                ).rowcount
        return changed

    @typed_errors
    def set_feedback(
        self, record_id: str, rating: Literal["up", "down"] | None, comment: str | None = None
    ) -> None:
        """The user's verdict on a turn; the comment is sealed and bound to the rating."""
        row = self._row(record_id)
        try:
            aead = self.aead(row["key_id"])
        except seal.SealError as exc:
            raise LogError(f"record {record_id} can no longer take feedback: {exc}") from exc
        blob = seal.seal(
            aead, json.dumps(comment).encode(), seal.feedback_ad(row["fmt"], record_id, rating)
        )
        with self.write_txn() as conn:
            conn.execute(
                "UPDATE interactions SET rating = ?, feedback = ? WHERE id = ?",
                (rating, blob, record_id),
            )

    # -- lifecycle and reports (lifecycle.py) --------------------------------------------------
    @typed_errors
    def rotate_key(self, new_source: KeySource | None = None) -> lifecycle.Rotation:
        return lifecycle.rotate_key(self, new_source)

    @typed_errors
    def apply_retention(self) -> int:
        return lifecycle.apply_retention(self)

    @typed_errors
    def enforce_budget(self) -> lifecycle.Eviction:
        return lifecycle.enforce_budget(self)

    @typed_errors
    def status(self) -> lifecycle.LogStatus:
        return lifecycle.status(self)

    def integrity_check(self) -> list[str]:
        with self.lock:
            return [r[0] for r in self.conn.execute("PRAGMA integrity_check").fetchall()]

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.lru_cache(maxsize=64)
def _period(span: float, starts: float) -> tuple[str, float, float]:
    day = datetime.fromtimestamp(starts, UTC).strftime("%Y-%m-%d")
    return f"{day}/{round(span / DAY_S)}d", starts, starts + span
