"""Master keys: sources, wrong keys (one typed error, nothing written), crash-safe rotation."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import LogKeyError
from edge_agent.logstore import (
    FileKeySource,
    LogConfig,
    LogStore,
    PassphraseKeySource,
    keyring_available,
    verify,
)
from edge_agent.logstore.keys import kid_of, new_key
from tests.logstore_support import make_config, make_result, memory_keyring


@pytest.fixture
def config(tmp_path: Path) -> LogConfig:
    return make_config(tmp_path)


@pytest.fixture
def fake_keyring() -> Iterator[Any]:
    import keyring

    previous = keyring.get_keyring()
    backend = memory_keyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def _fingerprint(config: LogConfig) -> str:
    """The database bytes (and whether a WAL exists), to prove nothing was written."""
    wal = config.path.with_name(config.path.name + "-wal")
    extra = wal.read_bytes() if wal.exists() else b""
    return hashlib.sha256(config.path.read_bytes() + extra).hexdigest()


def _seeded(config: LogConfig, n: int = 5, **kw: Any) -> list[str]:
    with LogStore(config, **kw) as store:
        return store.record_many((make_result(i), None) for i in range(n))


def test_wrong_key_file_is_one_typed_error_and_writes_nothing(config: LogConfig) -> None:
    _seeded(config)
    key_file = config.key_dir / "log-master.key"
    good = key_file.read_bytes()
    key_file.unlink()
    FileKeySource(config.key_dir).save(new_key())
    before = _fingerprint(config)
    with pytest.raises(LogKeyError, match="is not the one that sealed"):
        LogStore(config)
    assert _fingerprint(config) == before
    key_file.write_bytes(good)
    with LogStore(config) as store:
        assert verify(store).ok == 5


def test_missing_key_file_is_not_silently_replaced(config: LogConfig) -> None:
    _seeded(config)
    (config.key_dir / "log-master.key").unlink()
    with pytest.raises(LogKeyError, match="missing: restore it"):
        LogStore(config)
    assert not (config.key_dir / "log-master.key").exists()


def test_garbage_key_file_is_a_key_error(config: LogConfig) -> None:
    _seeded(config)
    (config.key_dir / "log-master.key").write_text("not a key\n")
    with pytest.raises(LogKeyError, match="not an edge-agent log key file"):
        LogStore(config)


def test_passphrase_round_trip_and_wrong_passphrase(config: LogConfig) -> None:
    cfg = replace(config, key_source="passphrase", passphrase="correct horse")
    _seeded(cfg)
    assert not (config.key_dir / "log-master.key").exists()
    before = _fingerprint(cfg)
    with pytest.raises(LogKeyError, match="wrong passphrase"):
        LogStore(replace(cfg, passphrase="battery staple"))
    assert _fingerprint(cfg) == before
    with pytest.raises(LogKeyError, match="EDGE_AGENT_LOG_PASSPHRASE"):
        LogStore(replace(cfg, passphrase=None))
    with LogStore(cfg) as store:
        assert verify(store).ok == 5


def test_auto_follows_the_source_the_log_was_made_with(config: LogConfig) -> None:
    _seeded(replace(config, key_source="passphrase", passphrase="pw"))
    with LogStore(replace(config, key_source="auto", passphrase="pw")) as store:
        assert store.source.name == "passphrase"
    with pytest.raises(LogKeyError, match="sealed with a passphrase key"):
        LogStore(replace(config, key_source="file"))


def test_auto_uses_the_key_file_when_no_keyring_exists(config: LogConfig) -> None:
    assert not keyring_available()  # conftest hides the OS keyring from every test
    with LogStore(replace(config, key_source="auto")) as store:
        assert store.source.name == "file"


def test_auto_prefers_the_os_keyring_when_there_is_one(
    config: LogConfig, fake_keyring: Any
) -> None:
    ids = _seeded(replace(config, key_source="auto"))
    assert not (config.key_dir / "log-master.key").exists()
    assert len(fake_keyring.items) == 1
    with LogStore(replace(config, key_source="auto")) as store:
        assert store.source.name == "keyring"
        assert store.get(ids[0]).id == ids[0]


@pytest.mark.parametrize("source", ["file", "passphrase", "keyring"])
def test_rotate_key_rewraps_without_losing_a_record(
    config: LogConfig, source: str, fake_keyring: Any
) -> None:
    cfg = replace(config, key_source=source, passphrase="old")  # type: ignore[arg-type]
    ids = _seeded(cfg, n=3)
    with LogStore(cfg) as store:
        old_kid = kid_of(store.master)
        new_source = PassphraseKeySource("new", n=2**10) if source == "passphrase" else None
        rotation = store.rotate_key(new_source)
        assert rotation.rewrapped == 1 and rotation.master_kid != old_kid
        assert [i.id for i in store.interactions()] == ids
    reopened = replace(cfg, passphrase="new") if source == "passphrase" else cfg
    with LogStore(reopened) as store:
        assert kid_of(store.master) == rotation.master_kid
        assert verify(store).ok == 3
    if source == "passphrase":
        with pytest.raises(LogKeyError):
            LogStore(cfg)  # the old passphrase no longer opens it


def test_rotation_that_died_before_its_commit_keeps_the_old_key(config: LogConfig) -> None:
    ids = _seeded(config)
    FileKeySource(config.key_dir).stage(new_key())  # staged, never committed
    with LogStore(config) as store:
        assert store.get(ids[0]).id == ids[0]


def test_rotation_that_died_after_its_commit_promotes_the_staged_key(
    config: LogConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _seeded(config)
    monkeypatch.setattr(FileKeySource, "promote", lambda self, key: None)  # the crash
    with LogStore(config) as store:
        new_kid = store.rotate_key().master_kid
    monkeypatch.undo()
    with LogStore(config) as store:
        assert kid_of(store.master) == new_kid
        assert verify(store).ok == len(ids)
    assert not (config.key_dir / "log-master.key.next").exists()


def test_a_second_process_picks_up_a_rotated_key(config: LogConfig) -> None:
    from tests.logstore_support import Clock

    clock = Clock()
    agent = LogStore(config, clock=clock)
    with LogStore(config, clock=clock) as other:
        other.rotate_key()
    clock.advance(30)  # a new period: the agent must wrap its new data key under the new master
    record_id = agent.record(make_result(99))
    agent.close()
    with LogStore(config) as store:
        assert store.get(record_id).id == record_id
        assert verify(store).clean
