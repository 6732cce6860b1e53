"""PostgreSQL: a pool of connections (psycopg 3, psycopg_pool) that any number of ingest
workers, in any number of processes, share. Everything that must hold across them is in the
database: the unique keys, the transactions, the quota counters. Installed with the `fleet`
extra; a device never imports this module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from edge_agent.errors import ConfigError


def _pg(sql: str) -> str:
    """The store's SQL is written with SQLite's `?`; psycopg's placeholder is `%s`."""
    return sql.replace("?", "%s")


class _Tx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(_pg(sql), args or None)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        with self.conn.cursor() as cur:
            cur.executemany(_pg(sql), rows)
            return int(cur.rowcount)  # summed over the rows


class PostgresEngine:
    name = "postgresql"

    def __init__(self, url: str, *, max_connections: int = 8) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise ConfigError(
                "a postgresql:// ingest store needs psycopg: pip install 'edge-agent[fleet]'"
            ) from exc
        try:  # once by hand: a refused or misspelt URL fails now, with the server's reason
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.Error as exc:
            raise ConfigError(f"cannot reach the ingest database: {exc}") from exc
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True},  # reads see the latest commit; writes open a transaction
            open=False,
            name="edge-agent-ingest",
        )
        try:
            self.pool.open(wait=True, timeout=15)
        except psycopg.OperationalError as exc:  # PoolTimeout is one
            self.pool.close()
            raise ConfigError(f"cannot reach the ingest database: {exc}") from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Tx]:
        with self.pool.connection() as conn, conn.transaction():
            yield _Tx(conn)

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.pool.connection() as conn:
            return list(conn.execute(_pg(sql), args or None).fetchall())

    @staticmethod
    def json_text(column: str, path: str) -> str:
        return f"({column}::jsonb #>> '{{{path.replace('.', ',')}}}')"

    def after_delete(self) -> None:
        """Deleted rows leave the disk when autovacuum reuses their pages (no zeroing)."""

    def close(self) -> None:
        self.pool.close()
