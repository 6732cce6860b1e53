"""`edge-agent log verify`: check every record and report the bad ones by id, never stop."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

from edge_agent.errors import LogIntegrityError
from edge_agent.logstore import seal, toolsets
from edge_agent.logstore.config import LogConfig
from edge_agent.logstore.keys import KeySource
from edge_agent.logstore.store import LogStore

_CHUNK = 256


@dataclass
class BadRecord:
    id: str
    reason: str


@dataclass
class VerifyReport:
    checked: int = 0
    ok: int = 0
    shredded: int = 0  # unreadable by design (their key was deleted), purged on next open
    toolsets: int = 0  # sealed tool schemas checked (a bad one is in `bad` as toolset:<fp>)
    bad: list[BadRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the database itself, the keys

    @property
    def clean(self) -> bool:
        return not self.bad and not self.problems

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"clean": self.clean}


def verify_log(config: LogConfig, *, source: KeySource | None = None) -> VerifyReport:
    """Verify the log at ``config.path``; a log too damaged to open is a report, not a crash
    (a wrong key still raises LogKeyError: nothing can be checked without it)."""
    try:
        store = LogStore(config, source=source)
    except LogIntegrityError as exc:
        return VerifyReport(problems=[str(exc), *_raw_integrity(config)])
    with store:
        return verify(store)


def _raw_integrity(config: LogConfig, most: int = 20) -> list[str]:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{config.path}?mode=ro", uri=True)) as c:
            found = [r[0] for r in c.execute("PRAGMA integrity_check").fetchmany(most)]
    except sqlite3.Error as exc:
        return [f"integrity_check failed: {exc}"]
    return [f"integrity_check: {line}" for line in found if line != "ok"]


def verify(store: LogStore) -> VerifyReport:
    report = VerifyReport()
    _integrity(store, report)
    _keys(store, report)
    _records(store, report)
    _toolsets(store, report)
    return report


def _toolsets(store: LogStore, report: VerifyReport) -> None:
    try:
        with store.lock:
            rows = list(store.db.query(toolsets.SELECT))
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"the tool schemas cannot be read: {exc}")
        return
    for row in rows:
        report.toolsets += 1
        try:
            toolsets.open_schemas(store.aead(row["key_id"]), row)
        except seal.Shredded:
            continue  # purged with its key's records
        except seal.SealError as exc:
            report.bad.append(BadRecord(f"toolset:{row['fingerprint']}", str(exc)))


def _integrity(store: LogStore, report: VerifyReport) -> None:
    try:
        found = store.integrity_check()
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"integrity_check failed: {exc}")
        return
    if found != ["ok"]:
        report.problems += [f"integrity_check: {line}" for line in found]


def _keys(store: LogStore, report: VerifyReport) -> None:
    try:
        with store.lock:
            ids = [r[0] for r in store.conn.execute("SELECT key_id FROM keys")]
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"the key table cannot be read: {exc}")
        return
    for key_id in ids:
        try:
            store.aead(key_id)
        except seal.SealError as exc:
            if not isinstance(exc, seal.Shredded):
                report.problems.append(str(exc))


def _records(store: LogStore, report: VerifyReport) -> None:
    last, top = 0, _max_rowid(store)
    while True:
        try:
            rows = _chunk(store, last)
        except sqlite3.DatabaseError as exc:
            if top is None or last >= top:
                report.problems.append(f"records after rowid {last} cannot be read: {exc}")
                return
            report.problems.append(f"rowids {last + 1}-{last + _CHUNK} are damaged: {exc}")
            _one_by_one(store, range(last + 1, min(last + _CHUNK, top) + 1), report)
            last += _CHUNK  # then keep checking the rest
            continue
        if not rows:
            return
        for row in rows:
            _check(store, row, report)
        last = rows[-1]["rowid"]


def _one_by_one(store: LogStore, rowids: range, report: VerifyReport) -> None:
    """Salvage what a damaged stretch still holds; name what it does not by rowid."""
    for rowid in rowids:
        try:
            with store.lock:
                rows = list(store.db.query("SELECT rowid, * FROM interactions WHERE rowid = ?",
                                           [rowid]))  # fmt: skip
        except sqlite3.DatabaseError as exc:
            report.checked += 1
            report.bad.append(BadRecord(f"rowid:{rowid}", f"unreadable: {exc}"))
            continue
        for row in rows:
            _check(store, row, report)


def _chunk(store: LogStore, after: int) -> list[dict[str, Any]]:
    sql = "SELECT rowid, * FROM interactions WHERE rowid > ? ORDER BY rowid LIMIT ?"
    with store.lock:
        return list(store.db.query(sql, [after, _CHUNK]))


def _max_rowid(store: LogStore) -> int | None:
    try:
        with store.lock:
            return int(store.conn.execute("SELECT max(rowid) FROM interactions").fetchone()[0] or 0)
    except sqlite3.DatabaseError:
        return None


def _check(store: LogStore, row: dict[str, Any], report: VerifyReport) -> None:
    report.checked += 1
    record_id = str(row.get("id"))
    try:
        store.decode(row)
    except seal.Shredded:
        report.shredded += 1
    except seal.SealError as exc:
        report.bad.append(BadRecord(record_id, str(exc)))
    except Exception as exc:  # a damaged row can hold anything: report it, keep going
        report.bad.append(BadRecord(record_id, f"{type(exc).__name__}: {exc}"))
    else:
        report.ok += 1
