"""The sealed log: recording, reading, sync bookkeeping, feedback, the batch writer, the CLI."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from edge_agent.cli import cli
from edge_agent.errors import LogError
from edge_agent.logstore import BatchWriter, LogConfig, LogStore, open_log, verify
from edge_agent.settings import Settings
from tests.logstore_support import Clock, make_config, make_messages, make_result, raw


@pytest.fixture
def config(tmp_path: Path) -> LogConfig:
    return make_config(tmp_path)


@pytest.fixture
def store(config: LogConfig) -> Iterator[LogStore]:
    with LogStore(config, clock=Clock()) as s:
        yield s


def test_record_round_trips_result_and_messages(store: LogStore) -> None:
    result = make_result(1)
    record_id = store.record(result, make_messages(result))
    assert record_id == result.id
    item = store.get(record_id)
    assert item.result == result
    assert item.messages == make_messages(result)
    assert item.recorded_at == store.clock()
    assert item.synced is False and item.feedback is None


def test_recording_the_same_turn_twice_keeps_one_row(store: LogStore) -> None:
    result = make_result()
    store.record(result)
    store.record(result)
    assert store.status().records == 1


def test_payload_is_not_on_disk_in_plaintext_but_metadata_is_queryable(
    store: LogStore, config: LogConfig
) -> None:
    result = make_result(request="unlock the front door for Alice at 7pm")
    store.record(result, make_messages(result))
    store.close()
    files = [config.path, config.path.with_name(config.path.name + "-wal")]
    data = b"".join(p.read_bytes() for p in files if p.exists())
    assert b"front door" not in data and b"HassTurnOn" not in data and b"Alice" not in data
    row = raw(config).execute("SELECT route, outcome, model, steps FROM interactions").fetchone()
    assert row == ("local", "answered", "smollm2-135m", 2)


def test_record_many_is_one_transaction_and_reads_back_in_order(store: LogStore) -> None:
    results = [make_result(i) for i in range(50)]
    ids = store.record_many((r, None) for r in results)
    assert ids == [r.id for r in results]
    assert [i.result.id for i in store.interactions()] == ids
    assert [r["id"] for r in store.rows(limit=5, newest=True)] == ids[-5:]


def test_unsynced_and_mark_synced(store: LogStore) -> None:
    ids = store.record_many((make_result(i), None) for i in range(10))
    assert [i.id for i in store.unsynced(limit=4)] == ids[:4]
    assert store.mark_synced(ids[:4]) == 4
    assert store.mark_synced(ids[:4]) == 0  # already synced
    assert [i.id for i in store.unsynced(limit=100)] == ids[4:]
    assert store.get(ids[0]).synced is True
    assert store.status().unsynced == 6


def test_feedback_is_sealed_and_read_back(store: LogStore, config: LogConfig) -> None:
    record_id = store.record(make_result())
    store.set_feedback(record_id, "down", "it was the living room light")
    feedback = store.get(record_id).feedback
    assert feedback is not None
    assert (feedback.rating, feedback.comment) == ("down", "it was the living room light")
    blob = raw(config).execute("SELECT feedback FROM interactions").fetchone()[0]
    assert b"living room" not in blob


def test_unknown_record_is_a_typed_error(store: LogStore) -> None:
    with pytest.raises(LogError, match="no record"):
        store.get("turn_nope")


def test_key_file_is_0600_in_a_0700_dir_apart_from_the_data(
    store: LogStore, config: LogConfig
) -> None:
    key_file = config.key_dir / "log-master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.key_dir.stat().st_mode) == 0o700
    assert config.key_dir not in config.path.parents


def test_reopening_applies_no_migration_twice(config: LogConfig) -> None:
    with LogStore(config) as first:
        first.record(make_result())
    with LogStore(config) as second:
        names = [r[0] for r in second.conn.execute("SELECT name FROM _sqlite_migrations")]
        assert names == ["m001_initial", "m002_toolsets"]
        assert second.status().records == 1


def test_every_row_records_its_key_and_format(store: LogStore, config: LogConfig) -> None:
    store.record(make_result())
    key_id, fmt = raw(config).execute("SELECT key_id, fmt FROM interactions").fetchone()
    assert key_id.startswith("k_") and fmt == 1


def test_batch_writer_commits_many_threads_together(store: LogStore) -> None:
    ids: list[str] = []
    with BatchWriter(store, max_batch=64) as writer:

        def work(base: int) -> None:
            for i in range(50):
                ids.append(writer.record(make_result(base + i)))

        threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(ids) == 200
    assert store.status().records == 200
    assert verify(store).clean


def test_batch_writer_rejects_records_after_close(store: LogStore) -> None:
    writer = BatchWriter(store)
    writer.close()
    with pytest.raises(LogError):
        writer.submit(make_result())


def test_config_from_settings_uses_data_and_config_dirs(tmp_path: Path) -> None:
    settings = Settings(config_dir=tmp_path / "c", data_dir=tmp_path / "d", log_budget_mb=1.5)
    store = open_log(settings, key_source="file")
    with store:
        assert store.path == tmp_path / "d" / "log" / "interactions.db"
        assert store.config.budget_bytes == int(1.5 * 2**20)
        assert (tmp_path / "c" / "keys" / "log-master.key").exists()


# -- CLI ---------------------------------------------------------------------------------------
@pytest.fixture
def home(edge_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGE_AGENT_LOG_KEY_SOURCE", "file")
    return edge_home


def _seed(home: Path, n: int = 3) -> list[str]:
    with open_log(Settings()) as store:
        return store.record_many((make_result(i), None) for i in range(n))


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, ["log", *args], catch_exceptions=False)


def test_cli_list_show_export_status(home: Path) -> None:
    ids = _seed(home)
    listed = json.loads(_cli("list", "--json").output)
    assert [r["id"] for r in listed] == ids
    assert listed[0]["request"].startswith("turn on the kitchen light")
    assert "body" not in listed[0]
    shown = json.loads(_cli("show", ids[1], "--json").output)
    assert shown["result"]["id"] == ids[1]
    lines = _cli("export").output.strip().splitlines()
    assert [json.loads(line)["result"]["id"] for line in lines] == ids
    assert len(json.loads(_cli("export", "--json", "--since", "1d").output)) == 3
    status = json.loads(_cli("status", "--json").output)
    assert status["records"] == 3 and status["counters"]["dropped_disk_full"] == 0
    assert "records: 3" in _cli("status").output


def test_cli_verify_rotate_and_feedback(home: Path) -> None:
    ids = _seed(home)
    assert "3 ok, 0 bad" in _cli("verify").output
    assert "re-wrapped 1 data key" in _cli("rotate-key").output
    _cli("feedback", ids[0], "up", "--comment", "right light")
    shown = json.loads(_cli("show", ids[0], "--json").output)
    assert shown["feedback"] == {"rating": "up", "comment": "right light"}
    assert "3 ok, 0 bad" in _cli("verify").output


def test_cli_errors_are_one_line(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_agent.cli import main

    _seed(home)
    with pytest.raises(SystemExit) as exit_info:
        main(["log", "show", "turn_missing"])
    assert exit_info.value.code == 8
    assert capsys.readouterr().err.strip().startswith("error: no record")
