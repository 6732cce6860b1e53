"""A damaged passphrase log: the scrypt parameters sit in the plaintext meta table, so anyone
who can write the file can set them. Each bad value is the log's one-line "damaged" error,
found before scrypt runs: never a traceback, never memory sized by the file."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError, LogIntegrityError
from edge_agent.logstore import LogConfig, LogStore
from edge_agent.logstore.keys import PassphraseKeySource
from edge_agent.settings import Settings
from tests.logstore_support import make_config, make_messages, make_result, raw

BAD = {
    "kdf_n": ["3", "abc", str(2**40), "0", "-1024", str(2**30), ""],
    "kdf_r": ["0", "x", str(2**20)],
    "kdf_p": ["0", str(2**31)],
    "kdf_salt": ["not base64!", "", "AAAA"],
}
CASES = [(name, value) for name, values in BAD.items() for value in values]


def _seeded(config: LogConfig) -> None:
    with LogStore(config) as store:
        store.record(make_result(1), make_messages(make_result(1)))


def _set_meta(config: LogConfig, name: str, value: str) -> None:
    with raw(config) as conn:
        assert conn.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name)).rowcount


@pytest.fixture
def config(tmp_path: Path) -> LogConfig:
    cfg = replace(make_config(tmp_path), key_source="passphrase", passphrase="correct horse")
    _seeded(cfg)
    return cfg


@pytest.mark.parametrize(("name", "value"), CASES)
def test_damaged_kdf_parameters_are_a_damaged_log(config: LogConfig, name: str, value: str) -> None:
    _set_meta(config, name, value)
    started = time.perf_counter()
    with pytest.raises(LogIntegrityError, match="damaged") as caught:
        LogStore(config)
    assert time.perf_counter() - started < 1.0
    assert name in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_kdf_parameter_is_a_damaged_log(config: LogConfig) -> None:
    with raw(config) as conn:
        conn.execute("DELETE FROM meta WHERE name = 'kdf_r'")
    with pytest.raises(LogIntegrityError, match="kdf_r"):
        LogStore(config)


def test_intact_parameters_still_open_the_log(config: LogConfig) -> None:
    with LogStore(config) as store:
        assert store.status().records == 1


@pytest.mark.parametrize("value", ["3", "abc", str(2**40)])
def test_log_list_says_damaged_in_one_line_and_exits_8(
    edge_home: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """`edge-agent log list` in a process that may not take more than 1 GiB of address space:
    a scrypt sized by the file (2**40 is 128 TiB) cannot even start."""
    monkeypatch.setenv("EDGE_AGENT_LOG_KEY_SOURCE", "passphrase")
    monkeypatch.setenv("EDGE_AGENT_LOG_PASSPHRASE", "correct horse")
    config = replace(LogConfig.from_settings(Settings()), scrypt_n=2**10)
    _seeded(config)
    _set_meta(config, "kdf_n", value)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "log", "list"],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        preexec_fn=_at_most_1_gib,
    )
    assert proc.returncode == 8, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "damaged" in proc.stderr and "kdf_n" in proc.stderr
    assert time.perf_counter() - started < 30


def _at_most_1_gib() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))


@pytest.mark.parametrize("n", [3, 2**30])
def test_a_log_is_never_made_with_parameters_it_would_refuse(n: int) -> None:
    with pytest.raises(ConfigError, match="scrypt"):
        PassphraseKeySource("pw", n=n)
