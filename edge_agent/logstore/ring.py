"""The key ring: the one holder of key material. It keeps the master key and its source,
wraps and unwraps the data keys in the ``keys`` table, and caches the unwrapped ones.

Callers hold the store's lock (and a write transaction for the methods that write).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_agent.errors import LogIntegrityError, LogKeyError
from edge_agent.logstore import keys
from edge_agent.logstore.config import LogConfig
from edge_agent.logstore.keys import KeySource
from edge_agent.logstore.seal import SealError, Shredded


def source_for(config: LogConfig, meta: Mapping[str, str]) -> KeySource:
    """The source ``config`` names; 'auto' follows the one the log was created with."""
    name: str = config.key_source
    recorded = meta.get("key_source")
    if name == "auto":
        name = recorded or ("keyring" if keys.keyring_available() else "file")
    elif recorded and recorded != name:
        raise LogKeyError(
            f"the log at {config.path} is sealed with a {recorded} key but log_key_source "
            f"is {name!r}: set it to {recorded!r} or 'auto'"
        )
    return keys.make_source(
        name,
        key_dir=config.key_dir,
        db_path=config.path,
        passphrase=config.passphrase,
        scrypt_n=config.scrypt_n,
    )


@dataclass(frozen=True)
class StagedKey:
    """The next master key, staged in its source while the data keys are re-wrapped."""

    source: KeySource
    key: bytes = field(repr=False)
    params: dict[str, str]  # KDF meta (salt, cost) the log records with it

    @property
    def kid(self) -> str:
        return keys.kid_of(self.key)

    def meta(self) -> dict[str, str]:
        return {"master_kid": self.kid, "key_source": self.source.name} | self.params


class KeyRing:
    """Unlocks the master key on creation: a wrong key raises LogKeyError before any write."""

    def __init__(
        self, conn: sqlite3.Connection, source: KeySource, meta: Mapping[str, str], where: Path
    ):
        self.conn = conn
        self.source = source
        self.where = where  # the log's path, for messages
        self.new_params: dict[str, str] = {}  # KDF meta of a master made here, to record
        self._aeads: dict[str, AESGCM | SealError] = {}  # failures too: verify asks per row
        self.master = self._unlock(meta)

    @property
    def kid(self) -> str:
        return keys.kid_of(self.master)

    # -- the master key -----------------------------------------------------------------------
    def _unlock(self, meta: Mapping[str, str]) -> bytes:
        kid = meta.get("master_kid")
        if kid is None:  # a new log: reuse a stored key (the old log was deleted) or make one
            key = self._load(meta)
            if key is None:
                key, self.new_params = self.source.create()
                key = self.source.save(key)
            return key
        key = self._load(meta)
        if key is not None and keys.kid_of(key) == kid:
            return key
        staged = self.source.load_staged(meta)
        if staged is not None and keys.kid_of(staged) == kid:
            self.source.promote(staged)  # a rotation died between its commit and its promote
            return staged
        raise LogKeyError(self._wrong_key_message(kid, key))

    def _load(self, meta: Mapping[str, str]) -> bytes | None:
        try:
            return self.source.load(meta)
        except LogIntegrityError as exc:  # the source read damaged meta: say which log
            raise LogIntegrityError(f"the log at {self.where} is damaged: {exc}") from exc

    def _wrong_key_message(self, kid: str, found: bytes | None) -> str:
        where = f"the log at {self.where} (master key {kid})"
        if self.source.name == "passphrase":
            return f"wrong passphrase for {where}; nothing was changed"
        if found is None:
            return (
                f"the {self.source.name} key for {where} is missing: restore it from a backup "
                "(without it the log cannot be read)"
            )
        return (
            f"the {self.source.name} key ({keys.kid_of(found)}) is not the one that sealed "
            f"{where}: restore the right key; nothing was changed"
        )

    def refresh(self) -> None:
        """Follow a rotation another process committed since this one unlocked."""
        row = self.conn.execute("SELECT value FROM meta WHERE name = 'master_kid'").fetchone()
        if row and row[0] != self.kid:
            self.master = self._unlock(dict(self.conn.execute("SELECT name, value FROM meta")))

    # -- rotation: stage, re-wrap (in the caller's transaction), promote ------------------------
    def stage(self, source: KeySource) -> StagedKey:
        key, params = source.create()
        source.stage(key)
        return StagedKey(source, key, params)

    def rewrap(self, staged: StagedKey) -> tuple[int, list[str]]:
        """Re-wrap every live data key under ``staged``; returns (re-wrapped, skipped ids).
        A key that no longer unwraps (damaged) is skipped and left as it was."""
        rows = self.conn.execute(
            "SELECT key_id, period, wrapped FROM keys WHERE wrapped IS NOT NULL"
        ).fetchall()
        skipped: list[str] = []
        for key_id, period, wrapped in rows:
            try:
                data_key = keys.unwrap(self.master, wrapped, key_id, period)
            except (InvalidTag, ValueError):
                skipped.append(key_id)
                continue
            self.conn.execute(
                "UPDATE keys SET wrapped = ?, master_kid = ? WHERE key_id = ?",
                (keys.wrap(staged.key, data_key, key_id, period), staged.kid, key_id),
            )
        return len(rows) - len(skipped), skipped

    def promote(self, staged: StagedKey) -> None:
        """After the commit: the staged key becomes the master in its source and here."""
        staged.source.promote(staged.key)
        self.master, self.source = staged.key, staged.source

    # -- data keys ------------------------------------------------------------------------------
    def current(self, period: str) -> tuple[str, AESGCM] | None:
        """The period's live data key, or None before its first record."""
        row = self.conn.execute(
            "SELECT key_id FROM keys WHERE period = ? AND shredded IS NULL", (period,)
        ).fetchone()
        if row is None:
            return None
        try:
            return row[0], self.aead(row[0])
        except SealError as exc:
            raise LogIntegrityError(
                f"cannot seal new records: {exc}; run `edge-agent log verify`"
            ) from exc

    def create(self, period: str, starts: float, ends: float, now: float) -> tuple[str, AESGCM]:
        """A new data key for ``period``, stored wrapped (inside a write transaction)."""
        self.refresh()  # never wrap a new key under a master another process retired
        data_key, key_id = keys.new_key(), "k_" + os.urandom(8).hex()
        self.conn.execute(
            "INSERT INTO keys(key_id, period, starts, ends, wrapped, master_kid, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key_id, period, starts, ends, keys.wrap(self.master, data_key, key_id, period),
             self.kid, now),
        )  # fmt: skip
        self._aeads[key_id] = AESGCM(data_key)
        return key_id, AESGCM(data_key)

    def aead(self, key_id: str) -> AESGCM:
        """The data key ``key_id``, unwrapped; raises SealError (Shredded when deleted)."""
        cached = self._aeads.get(key_id)
        if cached is None:
            cached = self._aeads[key_id] = self._unwrap(key_id)
        if isinstance(cached, SealError):
            raise cached
        return cached

    def _unwrap(self, key_id: str) -> AESGCM | SealError:
        row = self.conn.execute(
            "SELECT period, wrapped FROM keys WHERE key_id = ?", (key_id,)
        ).fetchone()
        if row is None:
            return SealError(f"data key {key_id} does not exist")
        if row[1] is None:
            return Shredded(f"data key {key_id} was shredded (retention or budget)")
        self.refresh()
        try:
            return AESGCM(keys.unwrap(self.master, row[1], key_id, row[0]))
        except (InvalidTag, ValueError):
            return SealError(f"data key {key_id} cannot be unwrapped (damaged)")

    def shred(self, key_ids: list[str], now: float) -> None:
        """Delete data keys (inside a write transaction): their records become unreadable."""
        self.conn.executemany(
            "UPDATE keys SET wrapped = NULL, shredded = ? WHERE key_id = ?",
            [(now, key_id) for key_id in key_ids],
        )
        for key_id in key_ids:
            self.forget(key_id)

    def forget(self, key_id: str) -> None:
        self._aeads.pop(key_id, None)
