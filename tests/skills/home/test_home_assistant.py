"""The Home Assistant backend's failure paths: a home that times out, refuses the token, drops
its websocket or is not there is a typed tool error the model is told, never a hang or a crash,
and the next call tries again. (Calls that work run against the real HA:
tests/homeassistant/test_backend.py.)"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from edge_agent.errors import ConfigError, HomeAuthError, HomeUnavailableError
from edge_agent.settings import Settings
from edge_agent.skills.home.hass_client import home_token, store_home_token
from edge_agent.skills.home.home_assistant import HomeAssistantHome
from edge_agent.skills.home.skill import skill
from edge_agent.skills.home.toolset import home_toolset
from edge_agent.tools import Toolset, execute
from edge_agent.types import Effect
from tests.cli_support import run_cli
from tests.logstore_support import memory_keyring

TOKEN = SecretStr("test-token")
TURNED_ON = {
    "speech": {}, "card": {}, "language": "en", "response_type": "action_done",
    "data": {"targets": [], "failed": [],
             "success": [{"type": "entity", "name": "Kitchen Light", "id": "light.kitchen"}]},
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


class Seam(httpx.MockTransport):
    """Fake HA at the HTTP seam (error-path tests only): each request gets the next answer
    (the last one from then on); requests are recorded in `seen`."""

    def __init__(self, *answers: Callable[[httpx.Request], httpx.Response]) -> None:
        self.seen: list[httpx.Request] = []
        super().__init__(self._answer)
        self.answers = answers

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return self.answers[min(len(self.seen), len(self.answers)) - 1](request)


def times_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("no answer", request=request)


def turned_on(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=TURNED_ON if "intent" in request.url.path else [])


def tools_on(home: HomeAssistantHome) -> Toolset:
    return home_toolset(backend=home, timeout_s=5.0)


def test_a_timeout_is_a_tool_error_and_the_next_call_tries_again() -> None:
    transport = Seam(times_out, turned_on)
    home = HomeAssistantHome(dead_url(), TOKEN, timeout_s=0.5, transport=transport)
    tool = tools_on(home).get("HassTurnOn")
    with pytest.raises(HomeUnavailableError, match="did not answer within 0.5 s.*tries again"):
        execute(tool, {"name": "Kitchen Light"})
    result = execute(tool, {"name": "Kitchen Light"})
    assert result["done"] == "turned on"
    sent = [json.loads(r.content) for r in transport.seen if r.url.path == "/api/intent/handle"]
    assert sent == [{"name": "HassTurnOn", "data": {"name": "Kitchen Light"}}] * 2


def test_a_refused_token_is_an_auth_error_saying_what_to_do() -> None:
    transport = Seam(lambda r: httpx.Response(401, text="401: Unauthorized"))
    home = HomeAssistantHome(dead_url(), TOKEN, transport=transport)
    with pytest.raises(HomeAuthError, match="refused the access token.*home token set"):
        execute(tools_on(home).get("HassTurnOff"), {"name": "Kitchen Light"})
    assert transport.seen[0].headers["Authorization"] == "Bearer test-token"


def test_a_proxy_saying_ha_is_restarting_is_unavailable_not_a_crash() -> None:
    transport = Seam(lambda r: httpx.Response(502))
    home = HomeAssistantHome(dead_url(), TOKEN, transport=transport)
    with pytest.raises(HomeUnavailableError, match="not serving"):
        home.call_service("light", "turn_on", ["light.kitchen"])


def test_nothing_listening_fails_fast_and_the_prompt_still_gets_a_home() -> None:
    home = HomeAssistantHome(dead_url(), TOKEN, timeout_s=2.0)
    tools = tools_on(home)
    started = time.perf_counter()
    with pytest.raises(HomeUnavailableError, match="cannot be reached"):
        execute(tools.get("HassTurnOn"), {"name": "Kitchen Light"})
    assert tools.context is not None
    assert tools.context("turn on the kitchen light", "Kitchen") is not None  # never raises
    assert home.inventory.entities == [] and home.error is not None
    with pytest.raises(HomeUnavailableError):  # not "nothing matches": the home is not there
        execute(tools.get("HassSetPosition"), {"name": "Blinds", "position": 50})
    assert time.perf_counter() - started < 2.0


def test_the_policy_judges_a_call_by_its_words_while_ha_is_down() -> None:
    tools = tools_on(HomeAssistantHome(dead_url(), TOKEN))
    assert tools.get("HassTurnOff").effect_of({"domain": "lock"}) == Effect.DANGEROUS
    assert tools.get("HassTurnOff").effect_of({"name": "Lamp"}) == Effect.ACTUATING


class WebsocketHA:
    """A real websocket server on 127.0.0.1 that misbehaves as `behave(ws)` says."""

    def __init__(self, behave: Callable[[Any], None]) -> None:
        from websockets.sync.server import serve

        self.connections = 0

        def handler(ws: Any) -> None:
            self.connections += 1
            behave(ws)

        self.server = serve(handler, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.socket.getsockname()[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def dropping() -> Iterator[WebsocketHA]:
    server = WebsocketHA(lambda ws: ws.close())  # drops right after the handshake
    yield server
    server.close()


@pytest.fixture
def silent() -> Iterator[WebsocketHA]:
    def say_hello_then_nothing(ws: Any) -> None:
        ws.send(json.dumps({"type": "auth_required"}))
        time.sleep(3)

    server = WebsocketHA(say_hello_then_nothing)
    yield server
    server.close()


def test_a_dropped_websocket_is_unavailable_and_reads_back_off(dropping: WebsocketHA) -> None:
    now = [100.0]
    home = HomeAssistantHome(dropping.url, TOKEN, retry_after_s=5.0, clock=lambda: now[0])
    with pytest.raises(HomeUnavailableError, match="dropped the websocket"):
        home.read()
    assert home.inventory.entities == []  # the prompt's read never raises...
    assert dropping.connections == 1  # ...nor waits on HA again before retry_after_s
    now[0] += 5.0
    assert home.inventory.entities == [] and dropping.connections == 2


def test_a_websocket_that_stops_answering_times_out(silent: WebsocketHA) -> None:
    home = HomeAssistantHome(silent.url, TOKEN, timeout_s=0.3)
    started = time.perf_counter()
    with pytest.raises(HomeUnavailableError, match="did not answer within 0.3 s"):
        home.read()
    assert time.perf_counter() - started < 1.5


def test_a_websocket_refusing_the_token_is_an_auth_error() -> None:
    def refuse(ws: Any) -> None:
        ws.send(json.dumps({"type": "auth_required"}))
        ws.recv()
        ws.send(json.dumps({"type": "auth_invalid", "message": "Invalid access token"}))

    server = WebsocketHA(refuse)
    try:
        with pytest.raises(HomeAuthError, match="auth_invalid"):
            HomeAssistantHome(server.url, TOKEN).read()
    finally:
        server.close()


# --- settings, token, keep-list ---------------------------------------------------------------


def settings(tmp_path: Path, **fields: Any) -> Settings:
    dirs: dict[str, Any] = {
        "config_dir": tmp_path,
        "data_dir": tmp_path,
        "cache_dir": tmp_path / "cache",
    }
    return Settings(**dirs, **fields)


def test_the_skill_builds_the_ha_toolset_from_settings_without_touching_ha(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_HA_TOKEN", "from-env")
    url = dead_url()
    s = settings(
        tmp_path, home_backend="home_assistant", home_url=url, home_token_env="MY_HA_TOKEN"
    )
    tools = skill.build_toolset(s)
    assert callable(getattr(tools, "close", None))  # the runtime closes its connections
    with pytest.raises(HomeUnavailableError, match=url):  # built; HA is asked only per call
        execute(tools.get("HassTurnOn"), {"name": "Kitchen Light"})


def test_the_ha_backend_needs_a_url_and_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HASS_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="home_url is not set"):
        skill.build_toolset(settings(tmp_path, home_backend="home_assistant"))
    with pytest.raises(ConfigError, match=r"\$HASS_TOKEN.*home token set"):
        skill.build_toolset(settings(tmp_path, home_backend="home_assistant", home_url="http://h"))


def test_the_simulated_home_reads_the_inventory_file_the_settings_name(tmp_path: Path) -> None:
    inventory = tmp_path / "home.yaml"
    inventory.write_text(
        "areas: [{id: den, name: Den}]\n"
        "entities: [{id: light.reading_lamp, name: Reading Lamp, area: den, state: 'off'}]\n"
    )
    s = settings(tmp_path, home_inventory=inventory)
    result = execute(skill.build_toolset(s).get("HassTurnOn"), {"name": "Reading Lamp"})
    assert result["entities"] == [{"name": "Reading Lamp", "state": "on"}]
    assert skill.keep is not None and {"Den", "Reading Lamp"} <= skill.keep(s)


def test_keep_words_survive_ha_being_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HASS_TOKEN", "t")
    s = settings(tmp_path, home_backend="home_assistant", home_url=dead_url())
    assert skill.keep is not None
    assert skill.keep(s) == set()  # nothing read yet: no names, no crash
    saved = s.cache_dir / "home" / "keep_words.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps(["Kitchen", "Coffee Maker"]))
    assert skill.keep(s) == {"Kitchen", "Coffee Maker"}  # the last ones read


@pytest.fixture
def os_keyring() -> Iterator[Any]:
    import keyring

    previous = keyring.get_keyring()
    keyring.set_keyring(memory_keyring())
    yield
    keyring.set_keyring(previous)


def test_the_token_comes_from_the_variable_else_the_keyring(
    os_keyring: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HASS_TOKEN", raising=False)
    store_home_token("http://ha:8123", "in-keyring")
    assert home_token("http://ha:8123/", "HASS_TOKEN") == SecretStr("in-keyring")
    assert home_token("http://other:8123", "HASS_TOKEN") is None  # per URL
    monkeypatch.setenv("HASS_TOKEN", "in-env")
    assert home_token("http://ha:8123", "HASS_TOKEN") == SecretStr("in-env")


def test_cli_token_set_reads_stdin_and_delete_removes_it(
    os_keyring: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HASS_TOKEN", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("secret-token\n"))
    code, out, _ = run_cli(capsys, "home", "token", "set", "http://ha:8123")
    assert code == 0 and "stored" in out and "secret-token" not in out
    assert home_token("http://ha:8123", "HASS_TOKEN") == SecretStr("secret-token")
    code, out, _ = run_cli(capsys, "home", "token", "delete", "http://ha:8123")
    assert code == 0 and "deleted" in out
    assert home_token("http://ha:8123", "HASS_TOKEN") is None
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    code, _, err = run_cli(capsys, "home", "token", "set", "http://ha:8123")
    assert code == 2 and "no token given" in err


def test_cli_token_without_a_url_says_what_to_set(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "home", "token", "delete")
    assert code == 2 and "home_url" in err and len(err.strip().splitlines()) == 1
