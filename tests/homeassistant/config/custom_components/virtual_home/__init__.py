"""Virtual devices for edge-agent's integration tests: one entity per device of home.yaml.

Every domain the home skill covers gets real HA entities (HA's own entity base classes, so
services, attributes and intents behave as in a real install) whose device layer is a few
attributes in memory. Each device is a registry device with the entry's area, so areas
and device names resolve as in a real home. `virtual_home.reset` puts every device back to
its home.yaml state; `GET /api/virtual_home/intents` lists the intents HA registered.
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol
from homeassistant.components.http import HomeAssistantView
from homeassistant.config_entries import SOURCE_IMPORT, ConfigEntry
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.helpers import intent
from homeassistant.helpers.typing import ConfigType

DOMAIN = "virtual_home"
PLATFORMS = sorted({"climate", "cover", "fan", "light", "lock", "media_player", "sensor",
                    "switch", "todo", "vacuum", "valve", "weather"})  # fmt: skip

CONFIG_SCHEMA = vol.Schema(
    {DOMAIN: vol.Schema({vol.Required("devices"): [dict]})}, extra=vol.ALLOW_EXTRA
)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    hass.data[DOMAIN] = {"devices": config[DOMAIN]["devices"], "entities": []}
    hass.http.register_view(IntentsView())

    async def reset(_call: ServiceCall) -> None:
        for entity in hass.data[DOMAIN]["entities"]:
            entity.restore()
            entity.async_write_ha_state()

    hass.services.async_register(DOMAIN, "reset", reset)
    if not hass.config_entries.async_entries(DOMAIN):
        hass.async_create_task(
            hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_IMPORT})
        )
    return True


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


def devices(hass: HomeAssistant, domain: str) -> list[dict[str, Any]]:
    """The home.yaml devices of one domain."""
    return [d for d in hass.data[DOMAIN]["devices"] if d["domain"] == domain]


class IntentsView(HomeAssistantView):
    """The names of the intents this HA handles (HA has no API for them)."""

    url = "/api/virtual_home/intents"
    name = "api:virtual_home:intents"

    async def get(self, request: Any) -> Any:
        hass = request.app["hass"]
        return self.json(sorted(hass.data.get(intent.DATA_KEY, {})))
