"""The systemd user units scripts/install_units.sh writes: they run the program install.sh put
in the repository's .venv, pass `systemd-analyze verify`, and `serve`'s unit starts a server."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.tinymodel import TinyModel

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install_units.sh"
UNITS = ("edge-agent.service", "edge-agent-sync.service", "edge-agent-sync.timer")
# the venv running these tests is the one scripts/install.sh made
PROGRAM = REPO / ".venv" / "bin" / "edge-agent"

Unit = dict[str, list[str]]
Done = subprocess.CompletedProcess[str]


def _run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Done:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)


def _install(unit_dir: Path, *args: str, **env: str) -> Done:
    return _run([str(SCRIPT), *args], {**os.environ, "EDGE_AGENT_UNIT_DIR": str(unit_dir), **env})


def _parse(path: Path) -> Unit:
    """Key -> values, in order, of one unit file (comments and section headers dropped)."""
    unit: Unit = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            unit.setdefault(key, []).append(value)
    return unit


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    done = _install(tmp_path / "units", EDGE_AGENT_UNIT_SANDBOX="yes")
    assert done.returncode == 0, done.stderr
    return tmp_path / "units"


def _unit_env(unit: Unit) -> dict[str, str]:
    """The environment systemd gives the unit's commands: this process's, minus what the unit
    must set itself, plus its EnvironmentFile= and Environment= lines."""
    env = {k: v for k, v in os.environ.items() if k != "EDGE_AGENT_HOME"}
    for name in unit.get("EnvironmentFile", []):
        path = Path(name.removeprefix("-"))
        for line in path.read_text().splitlines() if path.exists() else []:
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
    for line in unit.get("Environment", []):
        env.update(word.partition("=")[::2] for word in shlex.split(line))
    return env


def _command(exec_start: str, env: dict[str, str]) -> list[str]:
    """An ExecStart= line as systemd runs it: "-" dropped, a lone $VAR split on whitespace."""
    words: list[str] = []
    for word in shlex.split(exec_start.removeprefix("-")):
        is_var = word.startswith("$") and not word.startswith("${")
        words += env.get(word[1:], "").split() if is_var else [word]
    return words


def test_the_services_run_the_programs_install_sh_put_in_the_venv(unit_dir: Path) -> None:
    expected = {
        "edge-agent.service": [["serve"]],
        "edge-agent-sync.service": [["sync", "--once"], ["adapters", "pull"]],
    }
    for name, subcommands in expected.items():
        unit = _parse(unit_dir / name)
        env = _unit_env(unit)
        commands = [_command(line, env) for line in unit["ExecStart"]]
        assert [c[1:] for c in commands] == subcommands
        for command in commands:
            assert command[0] == str(PROGRAM) and os.access(command[0], os.X_OK)
            done = _run([*command, "--help"], env)
            assert done.returncode == 0, done.stderr
            words = " ".join(w for w in command[1:] if not w.startswith("-"))
            assert done.stdout.startswith(f"Usage: edge-agent {words} [OPTIONS]")


def test_settings_and_secrets_come_from_a_private_env_file_kept_across_installs(
    unit_dir: Path, edge_home: Path
) -> None:
    unit = _parse(unit_dir / "edge-agent.service")
    env_file = edge_home / "config" / "env"
    assert unit["EnvironmentFile"] == [f"-{env_file}"]
    # the dirs the installer resolved are the ones the units' program resolves
    assert f"EDGE_AGENT_HOME={edge_home}" in unit["Environment"][0].split()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert _parse(unit_dir / "edge-agent-sync.service")["EnvironmentFile"] == [f"-{env_file}"]
    env_file.write_text("EDGE_AGENT_SERVE_ARGS=--port 9999\n")
    env_file.chmod(0o644)
    assert _install(unit_dir).returncode == 0
    assert env_file.read_text() == "EDGE_AGENT_SERVE_ARGS=--port 9999\n"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_the_sandbox_confines_writes_to_the_data_dirs_or_is_left_out(
    tmp_path: Path, unit_dir: Path, edge_home: Path
) -> None:
    unit = _parse(unit_dir / "edge-agent.service")
    dirs = [f"-{edge_home / d}" for d in ("config", "data", "cache")]
    assert unit["ProtectSystem"] == ["strict"] and unit["ReadWritePaths"] == [" ".join(dirs)]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["Restart"] == ["on-failure"]
    assert _install(tmp_path / "plain", EDGE_AGENT_UNIT_SANDBOX="no").returncode == 0
    plain = tmp_path / "plain" / "edge-agent.service"
    assert "ProtectSystem" not in _parse(plain) and "#ProtectSystem=strict" in plain.read_text()
    assert _parse(plain)["NoNewPrivileges"] == ["yes"]  # needs no namespace


def test_uninstall_removes_the_units_and_keeps_the_settings(
    unit_dir: Path, edge_home: Path
) -> None:
    done = _install(unit_dir, "uninstall")
    assert done.returncode == 0 and not any(unit_dir.iterdir())
    assert (edge_home / "config" / "env").exists()


def test_a_missing_program_or_an_unknown_option_is_one_line_and_an_error(tmp_path: Path) -> None:
    done = _install(tmp_path, "reinstall")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "usage" in done.stderr
    done = _install(tmp_path, EDGE_AGENT_UNIT_SANDBOX="maybe")
    assert done.returncode != 0 and "auto, yes or no" in done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_verifies_the_units(unit_dir: Path, tmp_path: Path) -> None:
    def verify(folder: Path) -> Done:
        runtime = tmp_path / "runtime"  # a user manager's runtime dir, which verify needs
        runtime.mkdir(mode=0o700, exist_ok=True)
        files = [str(folder / name) for name in UNITS]
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
        cmd = ["systemd-analyze", "--user", "verify", *files]
        return _run(cmd, env, cwd=folder)

    done = verify(unit_dir)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    # the check is live here: a unit naming a program that is not there fails it
    broken = tmp_path / "broken"
    shutil.copytree(unit_dir, broken)
    service = broken / "edge-agent.service"
    service.write_text(service.read_text().replace(str(PROGRAM), "/nonexistent/edge-agent"))
    assert verify(broken).returncode != 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _running(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    with log.open("w") as err:
        proc = subprocess.Popen(command, env=env, stderr=err, text=True)
    try:
        yield proc
    finally:
        proc.terminate()  # what systemctl stop sends
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_models(url: str, proc: subprocess.Popen[str], log: Path) -> httpx.Response:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {log.read_text()}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("serve did not answer in 120 s")


def test_the_serve_unit_starts_a_server_that_stops_on_sigterm(
    unit_dir: Path, edge_home: Path, tiny_model: TinyModel, tmp_path: Path
) -> None:
    port = _free_port()
    args = f"--port {port} --model {tiny_model.gguf_path} --profile generic-x86-64"
    (edge_home / "config" / "env").write_text(f"EDGE_AGENT_SERVE_ARGS={args}\n")
    unit = _parse(unit_dir / "edge-agent.service")
    env = _unit_env(unit)
    url, log = f"http://127.0.0.1:{port}/v1/models", tmp_path / "serve.log"
    with _running(_command(unit["ExecStart"][0], env), env, log) as proc:
        answer = _wait_for_models(url, proc, log)
        token = (edge_home / "config" / "server-token").read_text().strip()
        models = httpx.get(url, headers={"authorization": f"Bearer {token}"})
        proc.terminate()
        # exit 0 or death by SIGTERM: both a clean stop to systemd, which Restart= leaves alone
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert answer.status_code == 401  # the install token guards it, as without systemd
    assert models.status_code == 200 and tiny_model.gguf_path.name in models.text
