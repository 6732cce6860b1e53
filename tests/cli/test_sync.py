"""The sync flow as a user runs it: `host enroll-token` → `sync enroll` → `sync --once` from
the real sealed log (records end up marked synced) → `host forget`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from edge_agent.anonymize import Anonymizer
from edge_agent.cli import cli
from edge_agent.errors import HostUnreachableError, SyncError
from edge_agent.host.tls import cert_fingerprint
from edge_agent.logstore import LogStore, open_log
from edge_agent.settings import Settings
from edge_agent.sync import Backoff, SyncClient, SyncOptions, enroll
from tests.logstore_support import make_config, make_messages, make_result
from tests.sync_support import SECRET, Cert, HostServer, make_cert, make_interaction, token

pytestmark = pytest.mark.integration


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The isolated environment (conftest), the log keyed by a file; tests switch homes."""
    monkeypatch.setenv("EDGE_AGENT_LOG_KEY_SOURCE", "file")
    return monkeypatch


def test_enroll_sync_once_and_forget(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    host_home, device_home = tmp_path / "host", tmp_path / "device"
    env.setenv("EDGE_AGENT_HOME", str(host_home))
    line = _run("host", "enroll-token", "--url", "https://127.0.0.1:PORT").output.strip()
    tls = host_home / "data" / "host" / "tls"
    cert = Cert(tls / "host.crt", tls / "host.key", cert_fingerprint(tls / "host.crt"))
    host = HostServer(host_home / "data" / "host", cert).start()
    try:
        env.setenv("EDGE_AGENT_HOME", str(device_home))
        with open_log(Settings()) as log:
            ids = log.record_many(
                (make_result(i), make_messages(make_result(i))) for i in range(12)
            )
        args = shlex.split(line.replace("https://127.0.0.1:PORT", host.url))[1:]
        assert "enrolled as dev_" in _run(*args).output
        with pytest.raises(SyncError, match="sync is off"):  # enrolled, but not enabled yet
            _run("sync", "--once")
        assert host.store.records() == []
        env.setenv("EDGE_AGENT_SYNC_ENABLED", "1")
        report = json.loads(_run("sync", "--once", "--json").output)
        assert report["acknowledged"] == 12 and report["held"] == {}
        with open_log(Settings()) as log:
            assert log.status().unsynced == 0
        assert sorted(r["id"] for r in host.store.records()) == sorted(ids)
        status = _run("sync", "status", "--json").output
        device_id = json.loads(status)["device_id"]
        env.setenv("EDGE_AGENT_HOME", str(host_home))
        assert f"{device_id}  12 records" in _run("host", "devices").output
        assert "forgot" in _run("host", "forget", device_id).output
        assert host.store.records() == []
    finally:
        host.stop()


def test_sync_refuses_while_disabled(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(SyncError, match="sync is off"):
        _run("sync", "--once")


def test_a_real_log_is_marked_only_after_the_host_acknowledges(tmp_path: Path) -> None:
    """The LogStore is the SyncSource: a failed push leaves everything unsynced."""
    with LogStore(make_config(tmp_path / "log")) as log:
        log.record_many((make_interaction(i).result, None) for i in range(5))
        host = HostServer(tmp_path / "h", make_cert(tmp_path)).start()
        e = enroll(host.url, token(host), pin=host.cert.sha256)
        host.stop()
        options = SyncOptions(max_attempts=2, backoff=Backoff(base_s=0.01, cap_s=0.01))
        with SyncClient(log, Anonymizer(SECRET), e, options) as client:
            with pytest.raises(HostUnreachableError):
                client.sync()
            assert log.status().unsynced == 5
            host.start()
            try:
                assert client.sync().acknowledged == 5
            finally:
                host.stop()
        assert log.status().unsynced == 0
