"""A real Home Assistant core on 127.0.0.1 for tests: start, onboard, talk to it, stop.

HA 2024.1.6 runs from its own virtualenv (scripts/install_hass.sh) with the config in
tests/homeassistant/config: the virtual_home custom integration's devices (home.yaml) in
every domain the home skill covers, plus the shopping list added through HA's config flow.
The owner user and tokens come from HA's own onboarding and auth flows.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from websockets.sync.client import connect

HASS_VERSION = "2024.1.6"
CONFIG = Path(__file__).parent / "config"
_CLIENT_ID = "http://127.0.0.1/"  # IndieAuth: any URL; HA only checks it is the same twice
_START_TIMEOUT_S = 60.0


def hass_venv() -> Path:
    """Where scripts/install_hass.sh puts HA's virtualenv."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "edge-agent" / f"hass-{HASS_VERSION}" / "venv"


def hass_missing() -> str | None:
    """Why the real HA cannot run here, or None when it can."""
    if not (hass_venv() / ".edge-agent-installed").is_file():
        return f"Home Assistant {HASS_VERSION} is not installed: run scripts/install_hass.sh"
    return None


def home_devices() -> list[dict[str, Any]]:
    """The virtual devices of config/home.yaml (entity `<domain>.<id>`, name, area, ...)."""
    devices: list[dict[str, Any]] = yaml.safe_load((CONFIG / "home.yaml").read_text())["devices"]
    return devices


class HassError(RuntimeError):
    """HA answered an error, or did not start."""


@dataclass(frozen=True)
class HassServer:
    """A running HA: its base URL, a long-lived admin token and its config directory."""

    url: str
    token: str
    config_dir: Path
    _http: httpx.Client = field(repr=False, compare=False)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One REST call (`path` under /api/), its JSON answer; HassError on 4xx/5xx."""
        reply = self._http.request(method, f"/api/{path}", json=body)
        if reply.is_error:
            raise HassError(f"{method} /api/{path}: {reply.status_code} {reply.text[:300]}")
        return reply.json() if reply.content else None

    def states(self) -> list[dict[str, Any]]:
        states: list[dict[str, Any]] = self.request("GET", "states")
        return states

    def state(self, entity_id: str) -> dict[str, Any]:
        """The entity's state object ({entity_id, state, attributes, ...})."""
        state: dict[str, Any] = self.request("GET", f"states/{entity_id}")
        return state

    def call_service(
        self, domain: str, service: str, data: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Call a service and wait for it; the states it changed."""
        changed: list[dict[str, Any]] = self.request(
            "POST", f"services/{domain}/{service}", data or {}
        )
        return changed

    def handle_intent(self, name: str, slots: dict[str, Any] | None = None) -> dict[str, Any]:
        """HA's intent handler (POST /api/intent/handle): its IntentResponse as JSON."""
        body = {"name": name, "data": slots or {}}
        reply: dict[str, Any] = self.request("POST", "intent/handle", body)
        return reply

    def converse(self, text: str) -> dict[str, Any]:
        """HA's own sentence matcher (the conversation agent, hassil + home-assistant-intents):
        POST /api/conversation/process; its ConversationResult as JSON."""
        reply: dict[str, Any] = self.request("POST", "conversation/process", {"text": text})
        return reply

    def render(self, template: str) -> str:
        """A Jinja template rendered by HA (areas, devices: `area_name('light.x')`)."""
        reply = self._http.post("/api/template", json={"template": template})
        if reply.is_error:
            raise HassError(f"template: {reply.status_code} {reply.text[:300]}")
        return reply.text

    def intents(self) -> list[str]:
        """The intent names this HA handles (virtual_home's view over HA's intent registry)."""
        names: list[str] = self.request("GET", "virtual_home/intents")
        return names

    def websocket(self, command: str, **fields: Any) -> Any:
        """One websocket API command (e.g. config/area_registry/list): its result."""
        return websocket_command(self.url, self.token, command, **fields)

    def shopping_list(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.request("GET", "shopping_list")
        return items

    def reset(self) -> None:
        """Every virtual device back to its home.yaml state; the shopping list emptied.
        (Registry edits a test makes, aliases or areas, are not undone.)"""
        self.call_service("virtual_home", "reset")
        self.call_service("shopping_list", "complete_all")
        self.call_service("shopping_list", "clear_completed_items")

    def close(self) -> None:
        self._http.close()


def websocket_command(url: str, token: str, command: str, **fields: Any) -> Any:
    """Authenticate on /api/websocket, send one command, return its result."""
    with connect(url.replace("http", "ws", 1) + "/api/websocket", open_timeout=10) as ws:
        _expect(ws.recv(timeout=10), "auth_required")
        ws.send(_json({"type": "auth", "access_token": token}))
        _expect(ws.recv(timeout=10), "auth_ok")
        ws.send(_json({"id": 1, "type": command, **fields}))
        reply = _loads(ws.recv(timeout=30))
    if not reply.get("success"):
        raise HassError(f"websocket {command}: {reply.get('error')}")
    return reply.get("result")


def _json(data: Any) -> str:
    return json.dumps(data)


def _loads(text: str | bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text)
    return data


def _expect(text: str | bytes, kind: str) -> None:
    if (got := _loads(text).get("type")) != kind:
        raise HassError(f"websocket: expected {kind}, got {got}")


# --- starting and stopping -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningHass:
    """The HA process and its server; `stop()` ends the process (SIGTERM, then kill)."""

    process: subprocess.Popen[bytes]
    server: HassServer
    started_s: float

    def stop(self) -> None:
        self.server.close()
        _end(self.process)


def start_hass(workdir: Path) -> RunningHass:
    """Copy the test config into `workdir`, start HA on a free port, onboard the owner and
    take a long-lived token; returns once every virtual device and the shopping list exist."""
    config_dir = workdir / "config"
    shutil.copytree(CONFIG, config_dir)
    port = free_port()
    began = time.monotonic()
    process = _spawn(config_dir, port)
    url = f"http://127.0.0.1:{port}"
    try:
        server = _onboarded(process, url, config_dir)
    except BaseException:
        _end(process)
        raise
    running = RunningHass(process, server, time.monotonic() - began)
    try:
        _poll(process, config_dir, "RUNNING state", lambda: _running(server))
        _add_shopping_list(server)
        _wait_for_entities(server, process)
    except BaseException:
        running.stop()
        raise
    running.started_s = time.monotonic() - began
    return running


def _spawn(config_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EDGE_AGENT_TEST_HASS_PORT": str(port)}
    log = (config_dir / "hass.log").open("wb")
    command = [str(hass_venv() / "bin" / "hass"), "-c", str(config_dir), "--skip-pip"]
    with log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _poll(process: subprocess.Popen[bytes], config_dir: Path, what: str, check: Any) -> Any:
    """`check()` until it returns a value; HassError (with HA's log tail) if HA exits or
    the time runs out."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HassError(f"HA exited ({process.returncode}) before {what}: {_tail(config_dir)}")
        try:
            if (value := check()) is not None:
                return value
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise HassError(f"HA: no {what} in {_START_TIMEOUT_S:.0f} s: {_tail(config_dir)}")


def _tail(config_dir: Path) -> str:
    lines = (config_dir / "hass.log").read_text(errors="replace").splitlines()
    return " | ".join(lines[-15:])


def _onboarded(process: subprocess.Popen[bytes], url: str, config_dir: Path) -> HassServer:
    """The owner user through onboarding, its auth code for a token, that for a long-lived one."""
    with httpx.Client(base_url=url, timeout=30) as http:
        _poll(process, config_dir, "onboarding", lambda: _answers(http, "/api/onboarding"))
        user = {"client_id": _CLIENT_ID, "name": "Test Owner", "username": "owner",
                "password": "edge-agent-test", "language": "en"}  # fmt: skip
        code = _ok(http.post("/api/onboarding/users", json=user))["auth_code"]
        grant = {"grant_type": "authorization_code", "code": code, "client_id": _CLIENT_ID}
        access = _ok(http.post("/auth/token", data=grant))["access_token"]
    token = websocket_command(
        url, access, "auth/long_lived_access_token", client_name="edge-agent tests", lifespan=30
    )
    headers = {"Authorization": f"Bearer {token}"}
    http = httpx.Client(base_url=url, headers=headers, timeout=30)
    return HassServer(url=url, token=token, config_dir=config_dir, _http=http)


def _answers(http: httpx.Client, path: str) -> bool | None:
    return True if http.get(path).status_code == 200 else None


def _running(server: HassServer) -> bool | None:
    return True if server.request("GET", "config")["state"] == "RUNNING" else None


def _ok(reply: httpx.Response) -> dict[str, Any]:
    if reply.is_error:
        raise HassError(f"{reply.request.url.path}: {reply.status_code} {reply.text[:300]}")
    data: dict[str, Any] = reply.json()
    return data


def _add_shopping_list(server: HassServer) -> None:
    """As a user adds it in the UI (HA makes it at onboarding's last step, which would also
    add met, radio_browser and google_translate: integrations this venv does not have)."""
    flow = server.request("POST", "config/config_entries/flow", {"handler": "shopping_list"})
    server.request("POST", f"config/config_entries/flow/{flow['flow_id']}", {})


def _wait_for_entities(server: HassServer, process: subprocess.Popen[bytes]) -> None:
    wanted = {f"{d['domain']}.{d['id']}" for d in home_devices()} | {"todo.shopping_list"}

    def ready() -> bool | None:
        return True if wanted <= {s["entity_id"] for s in server.states()} else None

    _poll(process, server.config_dir, "entities", ready)
    server.websocket(
        "config/entity_registry/update", entity_id="todo.shopping_list", area_id="kitchen"
    )


# --- one HA per test session, whichever fixture definitions ask for it -----------------------

_shared: list[RunningHass] = []


def shared_hass(tmp_path_factory: Any) -> HassServer:
    """The session's HA, started on first use (pytest's TempPathFactory gives its folder)."""
    if not _shared:
        _shared.append(start_hass(tmp_path_factory.mktemp("hass")))
    return _shared[0].server


def stop_shared_hass() -> None:
    while _shared:
        _shared.pop().stop()
