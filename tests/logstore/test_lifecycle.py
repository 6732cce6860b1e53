"""Retention by crypto-shredding, the disk budget, and a full disk."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.errors import LogFullError
from edge_agent.logstore import LogConfig, LogStore, lifecycle, verify
from edge_agent.logstore.seal import Shredded
from tests.logstore_support import Clock, make_config, make_messages, make_result, raw


@pytest.fixture
def config(tmp_path: Path) -> LogConfig:
    return make_config(tmp_path, period_days=7)


def _fill(store: LogStore, n: int, start: int = 0) -> list[str]:
    made = [make_result(start + i) for i in range(n)]
    return store.record_many((r, make_messages(r)) for r in made)


# -- retention ----------------------------------------------------------------------------------
def test_retention_shreds_the_key_then_purges_the_period(config: LogConfig) -> None:
    clock = Clock()
    store = LogStore(replace(config, retention_days=30), clock=clock)
    old = _fill(store, 5)
    old_key = raw(config).execute("SELECT key_id FROM keys").fetchone()[0]
    clock.advance(45)
    new = _fill(store, 3, start=100)  # a new period starts: retention runs
    conn = raw(config)
    assert conn.execute("SELECT wrapped, shredded FROM keys WHERE key_id = ?",
                        (old_key,)).fetchone()[0] is None  # fmt: skip
    assert [r[0] for r in conn.execute("SELECT id FROM interactions ORDER BY rowid")] == new
    st = store.status()
    assert st.counters["expired"] == 5 and st.counters["shredded_keys"] == 1
    assert not set(old) & {i.id for i in store.interactions()}
    store.close()


def test_shredded_records_are_unreadable_before_the_purge(config: LogConfig) -> None:
    with LogStore(config) as store:
        ids = _fill(store, 3)
        key_id = store.conn.execute("SELECT key_id FROM keys").fetchone()[0]
        with store.write_txn():
            lifecycle.shred(store, [key_id])  # a crash before the purge leaves this state
        with pytest.raises(Shredded):
            store.decode(store.rows()[0])
        assert verify(store).shredded == 3
    with LogStore(replace(config, retention_days=30)) as store:  # the next open purges
        assert store.status().records == 0
    assert ids


def test_a_shredded_key_leaves_no_copy_in_the_file(config: LogConfig) -> None:
    clock = Clock()
    with LogStore(replace(config, retention_days=10), clock=clock) as store:
        _fill(store, 2)
        wrapped = store.conn.execute("SELECT wrapped FROM keys").fetchone()[0]
        clock.advance(20)
        _fill(store, 1, start=50)
    wal = config.path.with_name(config.path.name + "-wal")
    data = config.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert wrapped not in data  # secure_delete zeroed it; the checkpoint truncated the WAL


# -- disk budget --------------------------------------------------------------------------------
def _budgeted(config: LogConfig, clock: Clock, budget: int) -> LogStore:
    return LogStore(replace(config, budget_bytes=budget), clock=clock)


def test_budget_evicts_synced_records_first(config: LogConfig) -> None:
    clock = Clock()
    store = _budgeted(config, clock, 400_000)
    synced = _fill(store, 200)
    store.mark_synced(synced)
    clock.advance(1)
    unsynced = _fill(store, 200, start=1000)
    while store.status().counters["evicted_synced"] == 0:
        clock.advance(0.01)
        unsynced += _fill(store, 50, start=2000 + len(unsynced))
    st = store.status()
    assert st.used_bytes <= 400_000
    assert st.counters["evicted_unsynced"] == 0
    kept = {r["id"] for r in store.rows()}
    assert set(unsynced) <= kept  # nothing unsynced was touched while synced ones remained
    assert len(set(synced) - kept) == st.counters["evicted_synced"]
    assert verify(store).clean
    store.close()


def test_budget_evicts_oldest_unsynced_only_when_nothing_else_is_left(config: LogConfig) -> None:
    clock = Clock()
    store = _budgeted(config, clock, 300_000)
    ids = _fill(store, 200)
    for k in range(10):
        clock.advance(1)
        ids += _fill(store, 100, start=1000 + 100 * k)
    st = store.status()
    assert st.counters["evicted_unsynced"] > 0 and st.counters["evicted_synced"] == 0
    assert st.used_bytes <= 300_000
    kept = [r["id"] for r in store.rows()]
    assert kept == ids[-len(kept) :]  # the oldest went first
    store.close()


def test_budget_shreds_the_keys_of_emptied_periods(config: LogConfig) -> None:
    clock = Clock()
    store = _budgeted(config, clock, 250_000)
    store.mark_synced(_fill(store, 100))
    for k in range(3):
        clock.advance(8)  # each batch in a new period
        _fill(store, 150, start=1000 + 200 * k)
    shredded = [p for p in store.status().periods if p.shredded]
    assert shredded and all(p.records == 0 for p in shredded)
    store.close()


# -- a full disk ------------------------------------------------------------------------------
def test_full_disk_keeps_what_was_written_and_counts_the_drops(config: LogConfig) -> None:
    full = replace(config, max_pages=40)  # ~160 KiB: "database or disk is full" after that
    store = LogStore(full)
    kept: list[str] = []
    with pytest.raises(LogFullError, match="dropped"):
        for i in range(2000):
            kept.append(store.record(make_result(i), make_messages(make_result(i))))
    dropped = 1
    for i in range(5):  # the caller keeps going; every refused record is counted
        with pytest.raises(LogFullError):
            store.record(make_result(5000 + i))
        dropped += 1
    assert store.status().counters["dropped_disk_full"] == dropped
    assert [i.id for i in store.interactions()] == kept
    store.close()
    with LogStore(config) as other:  # another process (log status) sees the count
        assert other.status().counters["dropped_disk_full"] == dropped
        assert verify(other).ok == len(kept)
        assert other.integrity_check() == ["ok"]


def test_full_disk_makes_room_from_synced_records_before_dropping(config: LogConfig) -> None:
    store = LogStore(replace(config, max_pages=40))
    ids: list[str] = []
    with pytest.raises(LogFullError):
        for i in range(2000):
            ids.append(store.record(make_result(i)))
    store.mark_synced(ids[:100])
    record_id = store.record(make_result(9999))  # room made from synced records
    st = store.status()
    assert st.counters["evicted_synced"] > 0 and st.counters["evicted_unsynced"] == 0
    assert store.get(record_id).id == record_id
    assert set(ids[100:]) <= {r["id"] for r in store.rows()}
    store.close()


def test_full_disk_batch_is_all_or_nothing(config: LogConfig) -> None:
    store = LogStore(replace(config, max_pages=40))
    with pytest.raises(LogFullError, match="500 record"):
        store.record_many((make_result(i), make_messages(make_result(i))) for i in range(500))
    assert store.status().records == 0
    assert store.status().counters["dropped_disk_full"] == 500
    store.close()
