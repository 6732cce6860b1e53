"""Talking to a real Home Assistant: REST and websocket calls with timeouts, and its token.

Every operation has a deadline and every failure becomes a typed tool error the model is told
(`HomeUnavailableError`, `HomeAuthError` for a refused token); nothing is kept open between
calls, so the next call after HA restarts simply connects again.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import httpx
from pydantic import SecretStr

from edge_agent.errors import ConfigError, HomeAuthError, HomeUnavailableError

KEYRING_SERVICE = "edge-agent-home"
_WS_MAX_BYTES = 64 * 1024 * 1024  # a large home's entity registry is several MiB
logger = logging.getLogger(__name__)


class HassClient:
    """One Home Assistant at `url`, authenticated with a long-lived access token.

    `transport` is a seam for tests of the error paths (an httpx MockTransport); everything
    else talks to a real server."""

    def __init__(
        self,
        url: str,
        token: SecretStr,
        timeout_s: float = 3.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = token
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token.get_secret_value()}"},
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """The response (any status but a refused token or HA gone); raises the typed errors."""
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise self._unavailable(f"did not answer within {self.timeout_s:g} s", exc) from exc
        except httpx.TransportError as exc:
            raise self._unavailable(f"cannot be reached ({type(exc).__name__})", exc) from exc
        if response.status_code in (401, 403):
            raise HomeAuthError(
                f"Home Assistant at {self.url} refused the access token ({response.status_code}):"
                " make a new long-lived token in HA and set it (HASS_TOKEN or "
                "`edge-agent home token set`)"
            )
        if response.status_code in (502, 503, 504):  # a proxy in front of a restarting HA
            raise self._unavailable(f"is not serving ({response.status_code})", None)
        return response

    def get_json(self, path: str) -> Any:
        response = self.request("GET", path)
        if response.status_code != 200:
            raise self._unavailable(f"answered {response.status_code} to GET {path}", None)
        return _json(response, self)

    def websocket(self, commands: list[dict[str, Any]]) -> list[Any]:
        """Run websocket commands in one authenticated session; each command's result, or None
        for a command this release does not know (e.g. floors before 2024.4)."""
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        url = "ws" + self.url.removeprefix("http") + "/api/websocket"
        t = self.timeout_s
        try:
            with connect(url, open_timeout=t, close_timeout=t, max_size=_WS_MAX_BYTES) as ws:
                self._ws_auth(ws)
                return [self._ws_command(ws, i, cmd) for i, cmd in enumerate(commands, 1)]
        except TimeoutError as exc:
            raise self._unavailable(f"did not answer within {t:g} s (websocket)", exc) from exc
        except (OSError, WebSocketException, ValueError) as exc:
            raise self._unavailable(f"dropped the websocket ({type(exc).__name__})", exc) from exc

    def _ws_auth(self, ws: Any) -> None:
        _ws_recv(ws, self.timeout_s)  # auth_required
        ws.send(json.dumps({"type": "auth", "access_token": self._token.get_secret_value()}))
        answer = _ws_recv(ws, self.timeout_s)
        if answer.get("type") != "auth_ok":
            raise HomeAuthError(
                f"Home Assistant at {self.url} refused the access token (websocket "
                f"{answer.get('type')}): set a new one (HASS_TOKEN or `edge-agent home token set`)"
            )

    def _ws_command(self, ws: Any, msg_id: int, command: dict[str, Any]) -> Any:
        ws.send(json.dumps({"id": msg_id, **command}))
        while True:
            answer = _ws_recv(ws, self.timeout_s)
            if answer.get("id") == msg_id and answer.get("type") == "result":
                break
        if answer.get("success"):
            return answer.get("result")
        error = answer.get("error") or {}
        if error.get("code") == "unknown_command":
            return None
        raise self._unavailable(f"refused {command['type']} ({error.get('message')})", None)

    def _unavailable(self, what: str, exc: BaseException | None) -> HomeUnavailableError:
        logger.debug("Home Assistant at %s %s: %r", self.url, what, exc)
        return HomeUnavailableError(
            f"Home Assistant at {self.url} {what}: it may be down or restarting; "
            "nothing was done if it did not answer, and the next call tries again"
        )


def _ws_recv(ws: Any, timeout_s: float) -> dict[str, Any]:
    message = ws.recv(timeout=timeout_s)
    data = json.loads(message)
    if not isinstance(data, dict):
        raise ValueError("a websocket message that is not an object")
    return data


def _json(response: httpx.Response, client: HassClient) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise client._unavailable("sent an answer that is not JSON", exc) from exc


# --- the token: an environment variable, else the OS keyring (never the command line) --------


def home_token(url: str, env_name: str | None) -> SecretStr | None:
    """The token from the named environment variable, else the OS keyring entry (service
    ``edge-agent-home``, user = the URL), else None."""
    if env_name and os.environ.get(env_name):
        return SecretStr(os.environ[env_name])
    try:
        import keyring

        value = keyring.get_password(KEYRING_SERVICE, url.rstrip("/"))
    except Exception as exc:  # no backend (headless Linux), locked, D-Bus: no token there
        logger.debug("no Home Assistant token in the OS keyring (%r)", exc)
        return None
    return SecretStr(value) if value else None


def store_home_token(url: str, token: str) -> None:
    """Save the token where `home_token` reads it."""
    import keyring

    try:
        keyring.set_password(KEYRING_SERVICE, url.rstrip("/"), token)
    except Exception as exc:  # backends raise their own types
        raise _keyring_failed("store", exc) from exc


def delete_home_token(url: str) -> bool:
    """Remove the URL's token from the OS keyring; False when none was stored."""
    import keyring
    from keyring.errors import PasswordDeleteError

    try:
        keyring.delete_password(KEYRING_SERVICE, url.rstrip("/"))
    except PasswordDeleteError:
        return False
    except Exception as exc:
        raise _keyring_failed("delete", exc) from exc
    return True


def _keyring_failed(action: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"the OS keyring could not {action} the Home Assistant token ({type(exc).__name__}): "
        "install or unlock a keyring backend, or put the token in the variable home_token_env "
        "names (HASS_TOKEN by default)"
    )
