"""Tampering and damage: every case is detected, reported by id, and never crashes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge_agent.errors import LogIntegrityError
from edge_agent.logstore import LogConfig, LogStore, verify, verify_log
from tests.logstore_support import flip_byte, make_config, make_messages, make_result, raw


@pytest.fixture
def config(tmp_path: Path) -> LogConfig:
    return make_config(tmp_path)


@pytest.fixture
def ids(config: LogConfig) -> list[str]:
    with LogStore(config) as store:
        made = [make_result(i) for i in range(6)]
        ids = store.record_many((r, make_messages(r)) for r in made)
        store.set_feedback(ids[0], "up", "good")
        store.set_feedback(ids[1], "down", "bad")
    return ids


def _bad_ids(config: LogConfig) -> set[str]:
    report = verify_log(config)
    assert report.checked == 6 or report.problems
    return {b.id for b in report.bad}


def _update(config: LogConfig, sql: str, *params: object) -> None:
    with raw(config) as conn:
        conn.execute(sql, params)


def _body(config: LogConfig, record_id: str) -> bytes:
    return (
        raw(config)
        .execute("SELECT body FROM interactions WHERE id = ?", (record_id,))
        .fetchone()[0]
    )


def test_clean_log_verifies(config: LogConfig, ids: list[str]) -> None:
    report = verify_log(config)
    assert report.clean and report.ok == 6


@pytest.mark.parametrize("where", [0, 5, 12, 40, -1])  # nonce, ciphertext, tag
def test_flipped_byte_in_a_ciphertext(config: LogConfig, ids: list[str], where: int) -> None:
    body = _body(config, ids[2])
    _update(config, "UPDATE interactions SET body = ? WHERE id = ?",
            flip_byte(body, where % len(body)), ids[2])  # fmt: skip
    assert _bad_ids(config) == {ids[2]}
    with LogStore(config) as store, pytest.raises(LogIntegrityError, match=ids[2]):
        store.get(ids[2])


def test_flipped_byte_in_the_file_itself(config: LogConfig, ids: list[str]) -> None:
    body = _body(config, ids[3])
    data = bytearray(config.path.read_bytes())
    at = data.find(body[20:60])
    assert at > 0, "the checkpointed file holds the ciphertext"
    data[at + 5] ^= 0x40
    config.path.write_bytes(bytes(data))
    assert _bad_ids(config) == {ids[3]}


def test_swapped_ciphertexts_fail_both_rows(config: LogConfig, ids: list[str]) -> None:
    a, b = _body(config, ids[1]), _body(config, ids[4])
    _update(config, "UPDATE interactions SET body = ? WHERE id = ?", b, ids[1])
    _update(config, "UPDATE interactions SET body = ? WHERE id = ?", a, ids[4])
    assert _bad_ids(config) == {ids[1], ids[4]}


def test_ciphertext_moved_to_another_column_fails(config: LogConfig, ids: list[str]) -> None:
    _update(config, "UPDATE interactions SET feedback = body WHERE id = ?", ids[0])
    assert _bad_ids(config) == {ids[0]}


def test_swapped_feedback_between_rows_fails(config: LogConfig, ids: list[str]) -> None:
    conn = raw(config)
    fa, fb = (conn.execute("SELECT feedback FROM interactions WHERE id = ?", (i,)).fetchone()[0]
              for i in ids[:2])  # fmt: skip
    _update(
        config, "UPDATE interactions SET feedback = ?, rating = 'down' WHERE id = ?", fb, ids[0]
    )
    assert _bad_ids(config) == {ids[0]}


def test_edited_rating_fails_the_feedback_seal(config: LogConfig, ids: list[str]) -> None:
    _update(config, "UPDATE interactions SET rating = 'up' WHERE id = ?", ids[1])
    assert _bad_ids(config) == {ids[1]}


@pytest.mark.parametrize(
    ("column", "value"),
    [("route", "escalated"), ("outcome", "failed"), ("ts", 1.0), ("steps", 9), ("size", 1)],
)
def test_edited_plaintext_metadata_is_caught(
    config: LogConfig, ids: list[str], column: str, value: object
) -> None:
    _update(config, f"UPDATE interactions SET {column} = ? WHERE id = ?", value, ids[5])
    assert _bad_ids(config) == {ids[5]}


def test_changed_record_id_fails(config: LogConfig, ids: list[str]) -> None:
    _update(config, "UPDATE interactions SET id = 'turn_forged' WHERE id = ?", ids[2])
    assert _bad_ids(config) == {"turn_forged"}


def test_damaged_wrapped_data_key_reports_every_record_of_its_period(
    config: LogConfig, ids: list[str]
) -> None:
    wrapped = raw(config).execute("SELECT wrapped FROM keys").fetchone()[0]
    _update(config, "UPDATE keys SET wrapped = ?", flip_byte(wrapped, 20))
    report = verify_log(config)
    assert {b.id for b in report.bad} == set(ids)
    assert any("cannot be unwrapped" in p for p in report.problems)


def test_damaged_live_data_key_stops_writes_with_a_typed_error(
    config: LogConfig, ids: list[str]
) -> None:
    wrapped = raw(config).execute("SELECT wrapped FROM keys").fetchone()[0]
    _update(config, "UPDATE keys SET wrapped = ?", flip_byte(wrapped, 20))
    with LogStore(config) as store, pytest.raises(LogIntegrityError, match="cannot seal"):
        store.record(make_result(77))


def test_truncated_database_is_reported_not_crashed(config: LogConfig, ids: list[str]) -> None:
    with LogStore(config) as store:  # more pages, so truncation cuts records, not just the header
        store.record_many((make_result(100 + i), None) for i in range(300))
    size = config.path.stat().st_size
    with open(config.path, "r+b") as f:
        f.truncate(size // 2)
    report = verify_log(config)
    assert not report.clean
    assert report.problems  # integrity_check and/or unreadable stretches


@pytest.mark.parametrize("keep", [50, 100, 4096])
def test_truncated_to_almost_nothing(config: LogConfig, ids: list[str], keep: int) -> None:
    with open(config.path, "r+b") as f:
        f.truncate(keep)
    report = verify_log(config)
    assert report.problems and report.checked == 0


def test_truncated_to_zero_bytes_is_a_new_empty_log(config: LogConfig, ids: list[str]) -> None:
    config.path.write_bytes(b"")  # indistinguishable from a log the user deleted to start over
    with LogStore(config) as store:
        assert store.status().records == 0


def test_damaged_pages_are_reported_and_the_rest_still_checked(config: LogConfig) -> None:
    with LogStore(config) as store:
        store.record_many((make_result(i), make_messages(make_result(i))) for i in range(600))
    data = bytearray(config.path.read_bytes())
    pages = len(data) // 4096
    for page in (pages // 2, pages - 3):
        data[page * 4096 + 100 : page * 4096 + 400] = bytes(range(256)) + bytes(44)
    config.path.write_bytes(bytes(data))
    report = verify_log(config)
    assert any("integrity_check" in p for p in report.problems)
    assert not report.clean and report.ok > 200  # the undamaged records were still checked


def test_not_a_database_is_a_typed_error(config: LogConfig, ids: list[str]) -> None:
    config.path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(LogIntegrityError, match="damaged"):
        LogStore(config)
    assert verify_log(config).problems


def test_list_and_export_skip_bad_records_without_stopping(
    config: LogConfig, ids: list[str]
) -> None:
    _update(config, "UPDATE interactions SET body = x'00' WHERE id = ?", ids[3])
    bad: list[str] = []
    with LogStore(config) as store:
        good = [i.id for i in store.interactions(on_bad=lambda i, _: bad.append(i))]
        assert bad == [ids[3]] and len(good) == 5
        with pytest.raises(LogIntegrityError):
            list(store.interactions())
        assert len(store.unsynced()) == 5


def test_verify_reports_garbage_values_of_any_type(config: LogConfig, ids: list[str]) -> None:
    _update(config, "UPDATE interactions SET body = 'text, not a blob', fmt = 'x' WHERE id = ?",
            ids[0])  # fmt: skip
    _update(config, "UPDATE interactions SET key_id = 'k_nope' WHERE id = ?", ids[1])
    with LogStore(config) as store:
        report = verify(store)
    assert {b.id for b in report.bad} == {ids[0], ids[1]}
    assert report.ok == 4


def test_wal_damage_after_a_crash_is_not_a_crash(config: LogConfig) -> None:
    store = LogStore(config)
    store.record_many((make_result(i), None) for i in range(20))
    wal = config.path.with_name(config.path.name + "-wal")
    data = bytearray(wal.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a torn WAL frame: SQLite drops it and what follows
    wal.write_bytes(bytes(data))
    try:
        report = verify_log(config)
        assert report.checked <= 20
    except sqlite3.DatabaseError as exc:  # pragma: no cover - must not happen
        pytest.fail(f"verify crashed: {exc}")
    finally:
        store.conn.close()
