"""Shared pytest fixtures, one section per concern."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backends.fail import Keyring as NoKeyring

from edge_agent.models.gguf import BaseModelIdentity, identity_of, read_header
from tests.tinymodel import TinyLora, TinyModel, make_tiny_llama, make_tiny_lora

# --- an isolated environment for every test -----------------------------------------------------

# Read by our code or by the HTTP stack under it: offline mode (settings.is_offline) and proxies
# (httpx would send the stand-in servers' 127.0.0.1 traffic through a developer's proxy).
_SCRUBBED = {"HF_HUB_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "HASS_TOKEN"}


def _isolate(mp: pytest.MonkeyPatch, home: Path) -> None:
    """Nothing of the developer's setup reaches a test: no ``EDGE_AGENT_*`` variable but a
    fresh ``EDGE_AGENT_HOME`` (so config.toml, keys and data live there), no offline or proxy
    variables, the XDG dirs inside that home (platformdirs, keyring's own config), and no OS
    keyring: remote API keys and log master keys never come from it. Subprocesses inherit all
    of it through ``os.environ`` (``PYTHON_KEYRING_BACKEND`` stands in for the in-process
    ``set_keyring``)."""
    for name in list(os.environ):
        if name.startswith("EDGE_AGENT_") or name.upper() in _SCRUBBED:
            mp.delenv(name)
    mp.setenv("EDGE_AGENT_HOME", str(home))
    mp.setenv("EDGE_AGENT_ROUTE_AUDIT_SHARE", "0")  # no random audits unless a test asks
    mp.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
    mp.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    mp.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    keyring.set_keyring(NoKeyring())


@pytest.fixture(scope="session", autouse=True)
def _isolated_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The same isolation for module- and session-scoped fixtures, which run before any
    function-scoped one."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path_factory.mktemp("session-home"))
        yield


@pytest.fixture(autouse=True)
def edge_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own ``EDGE_AGENT_HOME`` (config/, data/, cache/ go under it), in a fresh
    isolated environment; request it by name to reach those folders."""
    home = tmp_path_factory.mktemp("edge-agent-home")
    _isolate(monkeypatch, home)
    return home


# --- tiny models (tests/tinymodel.py) ---------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A 2-layer random llama written as an F32 GGUF, with its torch twin on demand."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_lora(tiny_model: TinyModel) -> TinyLora:
    """A rank-4 peft LoRA on every projection of `tiny_model`, with non-zero B."""
    return make_tiny_lora(tiny_model)


@pytest.fixture(scope="session")
def identity(tiny_model: TinyModel) -> BaseModelIdentity:
    """The base-model identity of `tiny_model`: what its adapters must match."""
    return identity_of(read_header(tiny_model.gguf_path))
