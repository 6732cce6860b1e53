"""Hardening of `edge-agent serve` (issue 13): a web page must not unlock the door, one
request must not kill the server. A real uvicorn on 127.0.0.1, spoken to with httpx."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from edge_agent.agent import Agent
from edge_agent.backends.base import Backend
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.routing.router import Router
from edge_agent.server.app import create_app, serve_in_thread
from edge_agent.skills.home.simulated import SimulatedHome
from edge_agent.tools import Toolset
from tests.demo_tools import STATE, set_light, unlock

DEMO = Toolset("demo", [set_light, unlock], description="lights and doors")
KEY = "s3cret-token"
AUTH = {"authorization": f"Bearer {KEY}"}
UNLOCK_FRONT = '{"name": "unlock", "arguments": {"name": "front door"}}'
UNLOCK_BACK = '{"name": "unlock", "arguments": {"name": "back door"}}'
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def clean_state() -> None:
    STATE.clear()


@contextmanager
def running(backend: Backend, router: Router | None = None, **kwargs: Any) -> Iterator[str]:
    agents = {"demo": Agent(backend, DEMO, router=router)}
    app = create_app(backend, toolsets=agents, model_name="base", **kwargs)
    with serve_in_thread(app) as url:
        yield url


def chat(text: str, model: str = "edge-agent/demo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def _error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


# --- DNS rebinding: Host and Origin ------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["attacker.example", "attacker.example:{port}", "127.0.0.1.nip.io:{port}", ""]
)
def test_a_dns_rebinding_host_never_reaches_the_agent(host: str) -> None:
    backend = ScriptedBackend([UNLOCK_FRONT])
    with running(backend, api_key=KEY) as url:
        port = httpx.URL(url).port
        headers = {**AUTH, "host": host.format(port=port)}
        r = httpx.post(f"{url}/chat/completions", json=chat("unlock the front door"),
                       headers=headers)  # fmt: skip
        models = httpx.get(f"{url}/models", headers=headers)
    assert r.status_code == 403 and _error(r)["code"] == "host_not_allowed"
    assert models.status_code == 403
    assert backend.requests == [] and STATE == {}


def test_loopback_names_and_configured_hosts_are_served() -> None:
    with running(ScriptedBackend([]), api_key=KEY, allowed_hosts=["edge.local"]) as url:
        port = httpx.URL(url).port
        for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", "[::1]",
                     f"[::1]:{port}", f"EDGE.local:{port}"):  # fmt: skip
            r = httpx.get(f"{url}/models", headers={**AUTH, "host": host})
            assert r.status_code == 200, host


@pytest.mark.parametrize("origin", ["http://attacker.example", "null", "http://localhost:3000"])
def test_a_foreign_origin_never_reaches_the_agent(origin: str) -> None:
    backend = ScriptedBackend([UNLOCK_FRONT])
    with running(backend, api_key=KEY) as url:
        headers = {**AUTH, "origin": origin}
        r = httpx.post(f"{url}/chat/completions", json=chat("unlock the front door"),
                       headers=headers)  # fmt: skip
    assert r.status_code == 403 and _error(r)["code"] == "origin_not_allowed"
    assert backend.requests == [] and STATE == {}


def test_a_configured_origin_is_served_with_cors_headers() -> None:
    origin = "http://localhost:3000"
    with running(ScriptedBackend(["hi"]), api_key=KEY, allowed_origins=[origin]) as url:
        preflight = httpx.options(
            f"{url}/chat/completions",
            headers={"origin": origin, "access-control-request-method": "POST",
                     "access-control-request-headers": "authorization, content-type"},
        )  # fmt: skip
        r = httpx.post(f"{url}/chat/completions", json=chat("hi", model="base"),
                       headers={**AUTH, "origin": origin})  # fmt: skip
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin


# --- the token ---------------------------------------------------------------------------------


def test_a_non_ascii_bearer_is_a_401_not_a_500() -> None:
    with running(ScriptedBackend(["hi"]), api_key=KEY) as url:
        for token in ("Bearer é".encode(), b"Bearer \xff\xfe", "Bearer s3cret-tokén".encode()):
            r = httpx.get(f"{url}/models", headers={"authorization": token})
            assert r.status_code == 401 and _error(r)["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/models", headers=AUTH).status_code == 200


def test_a_non_ascii_api_key_works_as_utf8() -> None:
    with running(ScriptedBackend(["hi"]), api_key="clé") as url:
        ok = httpx.get(f"{url}/models", headers={"authorization": "Bearer clé".encode()})
        wrong = httpx.get(f"{url}/models", headers={"authorization": b"Bearer cl\xe9"})
    assert ok.status_code == 200 and wrong.status_code == 401


def test_the_install_token_is_made_once_and_kept_0600(tmp_path: Path) -> None:
    from edge_agent.errors import ConfigError
    from edge_agent.server.keys import install_token

    path = tmp_path / "config" / "server-token"
    token = install_token(path)
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert install_token(path) == token  # the same one every start
    assert install_token(tmp_path / "other") != token
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        install_token(path)


# --- confirmations: what was confirmed is what runs --------------------------------------------


def _confirm(url: str, confirmation_id: str) -> dict[str, Any]:
    body = chat("yes", edge_agent={"confirm": confirmation_id})
    r = httpx.post(f"{url}/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json()["edge_agent"])


@pytest.mark.parametrize("routed", [False, True], ids=["agent", "agent with a router"])
def test_a_confirmation_runs_exactly_the_held_call_and_a_second_one_asks_again(
    routed: bool,
) -> None:
    # The model would propose the back door when asked again: a confirmation that re-runs
    # the turn pre-approved unlocks it without anyone confirming it.
    backend = ScriptedBackend([UNLOCK_FRONT, UNLOCK_BACK, '{"answer": "Both unlocked."}'])
    router = Router(None) if routed else None  # no remote model: the router keeps it local
    with running(backend, router) as url:
        r = httpx.post(f"{url}/chat/completions", json=chat("unlock the front and back door"))
        first = r.json()["edge_agent"]
        assert first["outcome"] == "needs_confirmation" and STATE == {}
        second = _confirm(url, first["confirmation_id"])
        assert STATE == {"front door": "unlocked"}  # the back door did not run pre-approved
        ran, held = second["tool_calls"]
        assert (ran["call"]["name"], ran["call"]["id"]) == ("unlock", first["confirmation_id"])
        assert (ran["call"]["arguments"], ran["status"]) == ({"name": "front door"}, "ok")
        assert second["outcome"] == "needs_confirmation" and held["status"] == "needs_confirmation"
        assert held["call"]["arguments"] == {"name": "back door"}
        assert second["confirmation_id"] not in (None, first["confirmation_id"])
        third = _confirm(url, second["confirmation_id"])
    assert third["outcome"] == "answered"
    assert STATE == {"front door": "unlocked", "back door": "unlocked"}
    assert len(backend.requests) == 3  # a confirmed call is replayed, never generated again


def test_an_id_confirms_its_own_call_only_once() -> None:
    backend = ScriptedBackend([UNLOCK_FRONT, '{"answer": "Done."}'])
    with running(backend) as url:
        r = httpx.post(f"{url}/chat/completions", json=chat("unlock the front door"))
        cid = r.json()["edge_agent"]["confirmation_id"]
        assert _confirm(url, cid)["outcome"] == "answered"
        again = httpx.post(f"{url}/chat/completions", json=chat("yes", edge_agent={"confirm": cid}))
    assert again.status_code == 400 and _error(again)["code"] == "confirmation_not_found"
    assert STATE == {"front door": "unlocked"}


# --- bodies ------------------------------------------------------------------------------------


def _padded(size: int) -> bytes:
    head, tail = b'{"model": "base", "messages": [{"role": "user", "content": "', b'"}]}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def _chunks(size: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    """`size` bytes of JSON as a stream, never held whole in this (the server's) process."""
    head, tail = b'{"model": "base", "messages": [{"role": "user", "content": "', b'"}]}'
    yield head
    block = b"a" * piece
    left = size - len(head) - len(tail)
    while left > 0:
        yield block[: min(piece, left)]
        left -= piece
    yield tail


def test_a_body_over_the_limit_is_a_413_in_openai_shape() -> None:
    backend = ScriptedBackend(["ok", "ok"])
    with running(backend) as url:
        big = httpx.post(f"{url}/chat/completions", content=_padded(2 * MiB),
                         headers={"content-type": "application/json"})  # fmt: skip
        chunked = httpx.post(f"{url}/chat/completions", content=_chunks(2 * MiB),
                             headers={"content-type": "application/json"})  # fmt: skip
        fits = httpx.post(f"{url}/chat/completions", content=_padded(MiB - 1024),
                          headers={"content-type": "application/json"})  # fmt: skip
    assert "content-length" not in chunked.request.headers  # really streamed in chunks
    for r in (big, chunked):
        assert r.status_code == 413 and _error(r)["code"] == "request_too_large"
    assert fits.status_code == 200
    assert len(backend.requests) == 1


def test_the_body_limit_is_configurable() -> None:
    with running(ScriptedBackend([]), max_body_bytes=4096) as url:
        r = httpx.post(f"{url}/chat/completions", content=_padded(8192),
                       headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413


def test_a_huge_streamed_body_does_not_balloon_memory() -> None:
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    with running(ScriptedBackend(["ok"])) as url:
        baseline = proc.memory_info().rss
        sampler.start()
        try:
            r = httpx.post(f"{url}/chat/completions", content=_chunks(64 * MiB),
                           headers={"content-type": "application/json"}, timeout=60)  # fmt: skip
        finally:
            done.set()
            sampler.join()
    grew_mb = (max(peak) - baseline) / MiB
    assert grew_mb < 16, f"RSS grew {grew_mb:.0f} MiB for a 64 MiB body"
    assert r.status_code == 413


# --- the device's files ------------------------------------------------------------------------


def test_the_home_state_file_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "home_state.json"
    home = SimulatedHome(state_path=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # a file an older version wrote
    light = next(e for e in home.inventory.entities if e.domain == "light")
    home.call_service("light", "turn_on", [light.id])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.tmp"))
