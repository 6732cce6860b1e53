"""`edge-agent serve`: where its key comes from, and the install token a real server asks for."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.cli_support import run_cli

MISSING_MODEL = ["--model", "/nonexistent/model.gguf", "--profile", "generic-x86-64"]


def _token_file(home: Path) -> Path:
    return home / "config" / "server-token"


def test_an_api_key_file_others_can_read_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    key_file.chmod(0o644)
    code, _, err = run_cli(capsys, "serve", "--api-key-file", str(key_file), *MISSING_MODEL)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert f"chmod 600 {key_file}" in err  # refused before any model is loaded


def test_a_key_from_a_file_or_the_environment_needs_no_token(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, edge_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    key_file.chmod(0o600)
    code, _, err = run_cli(capsys, "serve", "--api-key-file", str(key_file), *MISSING_MODEL)
    assert code == 3 and "warning" not in err  # it got as far as the (missing) model
    monkeypatch.setenv("EDGE_AGENT_API_KEY", "s3cret")
    code, _, err = run_cli(capsys, "serve", *MISSING_MODEL)
    assert code == 3 and "warning" not in err
    assert not _token_file(edge_home).exists()


def test_a_key_on_the_command_line_warns_that_ps_shows_it(
    capsys: pytest.CaptureFixture[str], edge_home: Path
) -> None:
    code, _, err = run_cli(capsys, "serve", "--api-key", "s3cret", *MISSING_MODEL)
    warning, error = err.splitlines()
    assert "--api-key" in warning and "ps" in warning and "--api-key-file" in warning
    assert code == 3 and error.startswith("error: ")
    assert not _token_file(edge_home).exists()  # the user's key, not the token


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serving(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    cmd = [sys.executable, "-m", "edge_agent", "serve", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_listening(url, proc)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_listening(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"serve exited {proc.returncode}: {err}")
        try:
            httpx.get(f"{url}/models", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("serve did not start listening in 120 s")


@pytest.mark.integration
def test_serve_on_loopback_requires_the_install_token(edge_home: Path) -> None:
    token_path = _token_file(edge_home)
    with _serving("--profile", "generic-x86-64", "--toolsets", "home") as (url, proc):
        anonymous = httpx.get(f"{url}/models")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "invalid_api_key"
        token = token_path.read_text().strip()
        allowed = httpx.get(f"{url}/models", headers={"authorization": f"Bearer {token}"})
        rebound = httpx.get(f"{url}/models", headers={"authorization": f"Bearer {token}",
                                                      "host": "attacker.example"})  # fmt: skip
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600 and len(token) >= 32
    assert allowed.status_code == 200 and "edge-agent/home" in allowed.text
    assert rebound.status_code == 403
    # on a terminal it is printed; a service's stderr (a pipe here) only names its file
    assert token not in err and f"token: <not shown> (kept in {token_path})" in err
