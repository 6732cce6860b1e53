"""The ``home`` skill: Home Assistant's intents on the device's home: simulated (default) or a
real Home Assistant (`home_backend = "home_assistant"`, `home_url`, a token)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.skills.skill import CalibrationRow, Skill

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from edge_agent.settings import Settings
    from edge_agent.skills.home.dataset import Row
    from edge_agent.skills.home.home_assistant import HomeAssistantHome
    from edge_agent.tools import Toolset
    from edge_agent.types import ToolCall


HA_TOOL_TIMEOUT_S = 10.0  # a call through HA: its intent or service, then its states again
KEEP_TTL_S = 600.0  # the real home's names are read again for the keep-list this often
_keep_cache: dict[str, tuple[float, set[str]]] = {}


def _toolset(settings: Settings) -> Toolset:
    from edge_agent.skills.home.inventory import load_inventory
    from edge_agent.skills.home.toolset import home_toolset

    if settings.home_backend == "home_assistant":
        home = home_assistant(settings)
        tools = home_toolset(backend=home, timeout_s=HA_TOOL_TIMEOUT_S)
        tools.close = home.close  # type: ignore[attr-defined]  # Runtime.close ends connections
        return tools
    inventory = load_inventory(settings.home_inventory) if settings.home_inventory else None
    # the simulated home keeps its state across runs, beside the device's other data
    return home_toolset(inventory=inventory, state_path=settings.data_dir / "home_state.json")


def home_assistant(settings: Settings) -> HomeAssistantHome:
    """The real Home Assistant the settings name; `ConfigError` without a URL or token."""
    from edge_agent.errors import ConfigError
    from edge_agent.skills.home.hass_client import home_token
    from edge_agent.skills.home.home_assistant import HomeAssistantHome

    if not settings.home_url:
        raise ConfigError("home_backend is home_assistant but home_url is not set: set it to "
                          "Home Assistant's URL, e.g. http://homeassistant.local:8123")  # fmt: skip
    token = home_token(settings.home_url, settings.home_token_env)
    if token is None:
        raise ConfigError(
            f"no Home Assistant token: set ${settings.home_token_env} or run "
            "`edge-agent home token set` (make a long-lived token in your HA profile)"
        )
    return HomeAssistantHome(settings.home_url, token)


def _keep(settings: Settings) -> set[str]:
    from edge_agent.skills.home.inventory import Inventory

    if settings.home_backend == "home_assistant":
        return _real_home_words(settings)
    if settings.home_inventory:
        from edge_agent.skills.home.inventory import load_inventory

        return load_inventory(settings.home_inventory).keep_words()
    return Inventory.default().keep_words()


def _real_home_words(settings: Settings) -> set[str]:
    """The real home's names, read at most every KEEP_TTL_S; the last ones read (kept in
    the cache dir) while HA cannot be reached; none, with a warning, before the first read.
    Never raises: the sync that asks must go on."""
    from edge_agent.errors import EdgeAgentError

    url = settings.home_url or ""
    cached = _keep_cache.get(url)
    if cached and time.monotonic() - cached[0] < KEEP_TTL_S:
        return cached[1]
    path = settings.cache_dir / "home" / "keep_words.json"
    try:
        home = home_assistant(settings)
        try:
            words = home.read().keep_words()
        finally:
            home.close()
    except EdgeAgentError as exc:
        words = _saved_words(path)
        logger.warning("home names for the anonymizer: %s; using %d saved ones", exc, len(words))
        return words
    _keep_cache[url] = (time.monotonic(), words)
    _save_words(path, words)
    return words


def _saved_words(path: Path) -> set[str]:
    try:
        return set(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return set()


def _save_words(path: Path, words: set[str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)  # the home's names are no other user's business
        path.write_text(json.dumps(sorted(words), ensure_ascii=False), encoding="utf-8")
    except OSError as exc:
        logger.warning("cannot save the home's names to %s: %s", path, exc)


def calibration_rows(rows: Iterable[Row]) -> list[CalibrationRow]:
    """HA rows as calibration rows: each in its own home, right when the call matches the
    row's slots (any of a slot's listed alternatives)."""
    return [
        CalibrationRow(
            row.id,
            row.sentence,
            partial(_row_toolset, row),
            partial(_right, row),
            area=row.speaker_area,
        )
        for row in rows
    ]


def _validation_rows(limit: int | None) -> list[CalibrationRow]:
    from edge_agent.skills.home import dataset

    # the validation split only: the test split stays unseen by what is picked on it
    return calibration_rows(dataset.load_split("validation")[:limit])


def _row_toolset(row: Row) -> Toolset:
    from edge_agent.skills.home.toolset import home_toolset

    return home_toolset(inventory=row.inventory())


def _context_bound(settings: Settings, adapted: bool) -> int | None:
    from edge_agent.skills.home.context_need import turn_tokens

    return turn_tokens(settings, adapted)


def _right(row: Row, call: ToolCall | None) -> bool:
    from edge_agent.skills.home.score import call_matches

    return call_matches(row.slots, row.intent, call)


skill = Skill(
    "home",
    toolset=_toolset,
    description="Home Assistant intents: lights, covers, climate, …",
    keep=_keep,
    calibration_rows=_validation_rows,
    context_bound=_context_bound,
)
