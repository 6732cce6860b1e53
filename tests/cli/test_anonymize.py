"""`edge-agent anonymize` shows byte for byte what `edge-agent sync` sends: on `edge-agent log
export` output, compared with the batch a real sync client pushed to a host on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from edge_agent.logstore import open_log
from edge_agent.settings import Settings
from edge_agent.skills import keep_words
from edge_agent.sync import device_anonymizer, enroll
from tests.cli_support import run_cli
from tests.logstore_support import make_messages, make_result
from tests.sync_support import HostServer, make_cert, token

pytestmark = pytest.mark.integration

REQUESTS = [
    "call Maria at +1 650-253-0000",
    "send 500 dollars to Will Turner",
    "my postcode is SW1A 1AA",
    "turn on the kitchen light",
]
PERSONAL = ["Maria", "650", "Will", "Turner", "SW1A", "1AA"]


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The requests above as turns in this device's sealed log."""
    monkeypatch.setenv("EDGE_AGENT_LOG_KEY_SOURCE", "file")
    results = [make_result(request=request) for request in REQUESTS]
    with open_log(Settings()) as log:
        return log.record_many((r, make_messages(r)) for r in results)


def _export(capsys: pytest.CaptureFixture[str], tmp_path: Path, *flags: str) -> Path:
    code, out, err = run_cli(capsys, "log", "export", *flags)
    assert code == 0, err
    path = tmp_path / "export.jsonl"
    path.write_text(out, encoding="utf-8")
    return path


def _sync_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """`edge-agent sync --once` to a real host; the (idempotency key, body SHA-256) it got."""
    host = HostServer(tmp_path / "host", make_cert(tmp_path)).start()
    try:
        enroll(host.url, token(host), pin=host.cert.sha256).save(Settings().enrollment_path)
        monkeypatch.setenv("EDGE_AGENT_SYNC_ENABLED", "1")
        code, _, err = run_cli(capsys, "sync", "--once")
        assert code == 0, err
        rows = host.store.conn.execute("SELECT key, body_sha256 FROM batches").fetchall()
    finally:
        host.stop()
    (row,) = rows
    return row[0], row[1]


def test_anonymize_prints_the_bytes_sync_sends(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logged: list[str],
) -> None:
    code, out, err = run_cli(capsys, "anonymize", str(_export(capsys, tmp_path)))
    assert code == 0, err
    records = out.encode().splitlines()
    assert [json.loads(r)["result"]["id"] for r in records] == logged
    body = b'{"protocol":1,"records":[' + b",".join(records) + b"]}"
    sha = hashlib.sha256(body).hexdigest()
    assert _sync_once(capsys, tmp_path, monkeypatch) == ("b1_" + sha, sha)
    for word in PERSONAL:
        assert not re.search(rf"\b{word}\b", out), word
    assert out.count('"name":"HassTurnOn"') == len(REQUESTS)  # the tool name sync keeps
    assert "Tools: HassTurnOn, HassTurnOff." in out and '"area":"Kitchen"' in out
    assert "turn on the kitchen light" in out


def test_anonymize_reads_the_json_array_of_log_export_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, logged: list[str]
) -> None:
    lines = run_cli(capsys, "anonymize", str(_export(capsys, tmp_path)))[1]
    array = _export(capsys, tmp_path, "--json")
    code, out, err = run_cli(capsys, "anonymize", "--json", str(array))
    assert code == 0 and out == lines and len(out.splitlines()) == len(logged), err


def test_plain_text_uses_the_keep_words_sync_uses(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = tmp_path / "note.txt"
    source.write_text("call Maria at +1 650-253-0000, then turn on the Garage Light\n")
    code, out, _ = run_cli(capsys, "anonymize", str(source))
    assert code == 0 and out == device_anonymizer(Settings(), keep_words()).scrub(
        source.read_text()
    )
    assert "Maria" not in out and out.endswith("turn on the Garage Light\n")


def test_a_broken_record_is_one_line_and_a_non_zero_exit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = tmp_path / "export.jsonl"
    source.write_text('{"result": {"request": "call Maria"}, "messages": []}\n')
    code, out, err = run_cli(capsys, "anonymize", str(source))
    assert code == 8 and out == "" and "record 1 is not a logged interaction" in err
    assert len(err.strip().splitlines()) == 1
