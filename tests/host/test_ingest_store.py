"""The ingest store on both engines: migrations from one definition, and the guarantees several
ingest workers rely on, held by the database (separate store instances, each with its own
connections, stand in for workers): one batch per key, a conflict for another body, quotas
that add up across workers."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import ConfigError
from edge_agent.host.ingest_db.schema import LATEST, MIGRATIONS, migrate
from edge_agent.host.ingest_store import Incoming, IngestStore, KeyConflict, Quota, QuotaExceeded
from tests.sync_support import make_interaction


def records(*ids: int) -> list[tuple[str, float, str]]:
    items = [make_interaction(i) for i in ids]
    return [(i.id, i.recorded_at, i.model_dump_json(exclude={"synced"})) for i in items]


def batch(key: str, ids: list[int], body: str = "", device: str = "d1") -> Incoming:
    return Incoming(device, key, body or key, wire_bytes=100, records=records(*ids))


@pytest.fixture
def stores(store_url: str) -> Iterator[Callable[[], IngestStore]]:
    """Opens stores on the test's database, as many as asked (each its own connections)."""
    opened: list[IngestStore] = []

    def open_one() -> IngestStore:
        opened.append(IngestStore(store_url))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Runs the calls at once, one thread each; what each returned or raised."""
    start, out = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        try:
            out[i] = calls[i]()
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


# --- migrations ---------------------------------------------------------------------------------


def versions(store: IngestStore) -> list[int]:
    rows = store.engine.read("SELECT version FROM schema_version ORDER BY version")
    return [r[0] for r in rows]


def test_a_new_store_has_every_migration_once(stores: Callable[[], IngestStore]) -> None:
    first = stores()
    assert versions(first) == [m.version for m in MIGRATIONS] and LATEST == 2
    second = stores()  # opening again applies nothing
    assert migrate(second.engine) == [] and versions(second) == versions(first)


def test_timestamps_keep_their_precision(stores: Callable[[], IngestStore]) -> None:
    """PostgreSQL's REAL is 4 bytes: the schema says DOUBLE PRECISION there."""
    store = stores()
    store.clock = lambda: 1_750_000_123.456789
    result, _ = store.ingest(batch("k" * 16, [1]), Quota())
    row = store.records()[0]
    assert result.received_at == row["received"] == 1_750_000_123.456789
    assert row["recorded_at"] == 1_750_000_001.0


def test_a_sqlite_file_from_before_migrations_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "ingest.db"
    with sqlite3.connect(db) as old:  # version 1's tables as an older host made them
        for statement in MIGRATIONS[0].statements:
            old.execute(statement.format(real="REAL", without_rowid="WITHOUT ROWID"))
        old.execute("INSERT INTO devices VALUES ('dev_old', 'h', 1.0, 9e99)")
    old.close()
    store = IngestStore(db)
    try:
        assert versions(store) == [1, 2]
        assert [d["id"] for d in store.devices()] == ["dev_old"]
        store.ingest(batch("k" * 16, [1], device="dev_old"), Quota(batches_per_minute=5))
        assert store.devices()[0]["records"] == 1
    finally:
        store.close()


def test_a_database_url_that_is_not_postgresql_is_refused() -> None:
    with pytest.raises(ConfigError, match="postgresql:// only"):
        IngestStore("mysql://host/db")


def test_an_unreachable_postgresql_is_a_config_error() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ConfigError, match="cannot reach the ingest database"):
        IngestStore("postgresql://nobody@127.0.0.1:1/none")


# --- several workers on one database ------------------------------------------------------------


def test_the_same_batch_from_two_workers_at_once_is_stored_once(
    stores: Callable[[], IngestStore],
) -> None:
    a, b = stores(), stores()
    for n in range(10):
        key, ids = f"key-{n:012d}", [n * 3, n * 3 + 1, n * 3 + 2]
        (ra, replay_a), (rb, replay_b) = race(
            lambda s=a, k=key, i=ids: s.ingest(batch(k, i), Quota()),
            lambda s=b, k=key, i=ids: s.ingest(batch(k, i), Quota()),
        )
        assert ra == rb and ra.stored == 3 and ra.duplicates == 0
        assert sorted([replay_a, replay_b]) == [False, True]
    assert len(a.records()) == 30
    assert a.engine.read("SELECT count(*) FROM batches")[0][0] == 10


def test_one_key_with_two_bodies_at_once_keeps_one_and_refuses_the_other(
    stores: Callable[[], IngestStore],
) -> None:
    a, b = stores(), stores()
    for n in range(10):
        key = f"key-{n:012d}"
        outcomes = race(
            lambda s=a, k=key, n=n: s.ingest(batch(k, [2 * n], body="A"), Quota()),
            lambda s=b, k=key, n=n: s.ingest(batch(k, [2 * n + 1], body="B"), Quota()),
        )
        conflicts = [o for o in outcomes if isinstance(o, KeyConflict)]
        kept = [o for o in outcomes if isinstance(o, tuple)]
        assert len(conflicts) == 1 and len(kept) == 1 and kept[0][0].stored == 1, outcomes
    assert len(a.records()) == 10


def test_the_daily_quota_holds_across_workers(stores: Callable[[], IngestStore]) -> None:
    a, b = stores(), stores()
    quota = Quota(records_per_day=10)

    def push(store: IngestStore, first: int) -> int:
        refused = 0
        for i in range(first, first + 10):
            try:
                store.ingest(batch(f"key-{i:012d}", [i]), quota)
            except QuotaExceeded:
                refused += 1
        return refused

    refused = race(lambda: push(a, 0), lambda: push(b, 100))
    assert sum(refused) == 10 and len(a.records()) == 10
    with a.engine.transaction() as c:
        used = c.execute("SELECT records FROM usage WHERE device_id = 'd1'").fetchone()[0]
    assert used == 10  # refused batches added nothing


def test_a_token_spent_by_two_workers_at_once_enrolls_one_device(
    stores: Callable[[], IngestStore],
) -> None:
    a, b = stores(), stores()
    for _ in range(5):
        token = a.create_token(60)
        outcomes = race(lambda t=token: a.redeem(t, 60), lambda t=token: b.redeem(t, 60))
        assert sum(isinstance(o, tuple) for o in outcomes) == 1, outcomes
    assert len(a.devices()) == 5


def test_forget_and_retention_leave_other_devices(stores: Callable[[], IngestStore]) -> None:
    store = stores()
    now = [1_750_000_000.0]
    store.clock = lambda: now[0]
    store.ingest(batch("k" * 16, [1, 2], device="d1"), Quota(batches_per_minute=9))
    store.ingest(batch("k" * 16, [1], device="d2"), Quota(batches_per_minute=9))
    gone = store.forget("d1")
    assert gone["records"] == 2 and gone["batches"] == 1 and gone["usage"] == 1
    assert gone["rate"] == 1 and {r["device_id"] for r in store.records()} == {"d2"}
    now[0] += 3 * 86_400
    assert store.apply_retention(days=1) == 1 and store.records() == []
    with store.engine.transaction() as c:
        left = [c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("usage", "rate")]
    assert left == [0, 0]


# --- the CLI ------------------------------------------------------------------------------------


def test_host_commands_use_the_database_url_from_the_environment(
    store_url: str, monkeypatch: pytest.MonkeyPatch, edge_home: Path
) -> None:
    from click.testing import CliRunner

    from edge_agent.cli import cli

    if store_url.startswith("postgresql://"):
        monkeypatch.setenv("EDGE_AGENT_HOST_DATABASE_URL", store_url)
    store = IngestStore(store_url)
    try:
        device_id, _, _ = store.redeem(store.create_token(60), 3600)
        store.ingest(batch("k" * 16, [1, 2], device=device_id), Quota())
    finally:
        store.close()
    sqlite_file = edge_home / "data" / "host" / "ingest.db"
    if not store_url.startswith("postgresql://"):  # the default: the host folder's file
        sqlite_file.parent.mkdir(parents=True)
        Path(store_url).rename(sqlite_file)
    run = CliRunner().invoke
    assert f"{device_id}  2 records" in run(cli, ["host", "devices"]).output
    assert "forgot" in run(cli, ["host", "forget", device_id]).output
    assert run(cli, ["host", "devices", "--json"]).output.strip() == "[]"
