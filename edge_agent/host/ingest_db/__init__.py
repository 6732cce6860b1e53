"""The ingest store's database engines: SQLite (one file, the default) and PostgreSQL (a
server that any number of ingest workers share). `IngestStore` writes its SQL once, with `?`
placeholders; an engine runs it, in transactions, and renders the few things that differ."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from edge_agent.errors import ConfigError


class Tx(Protocol):
    """One open transaction: SQL written for SQLite (`?` placeholders)."""

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> Any: ...  # .fetchone/.rowcount

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> int: ...  # rows changed


class Engine(Protocol):
    name: str

    def transaction(self) -> AbstractContextManager[Tx]: ...

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

    def json_text(self, column: str, path: str) -> str:
        """An SQL expression: the text at `path` ("result.skill") in a JSON column, or NULL."""
        ...

    def after_delete(self) -> None: ...

    def close(self) -> None: ...


def is_url(target: Path | str) -> bool:
    return isinstance(target, str) and "://" in target


def engine_for(target: Path | str) -> Engine:
    """A file path: SQLite. ``postgresql://…`` (or ``postgres://``): PostgreSQL."""
    if not is_url(target):
        from edge_agent.host.ingest_db.sqlite import SqliteEngine

        return SqliteEngine(Path(target))
    scheme = str(target).split("://", 1)[0].lower()
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"database URL {scheme}://…: the ingest store takes postgresql:// only")
    from edge_agent.host.ingest_db.postgres import PostgresEngine

    return PostgresEngine(str(target))
