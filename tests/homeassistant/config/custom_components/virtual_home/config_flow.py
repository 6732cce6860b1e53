"""The one config entry that holds the virtual devices (a device needs a config entry)."""

from __future__ import annotations

from typing import Any

from homeassistant import config_entries

from . import DOMAIN


class VirtualHomeFlow(config_entries.ConfigFlow, domain=DOMAIN):
    VERSION = 1

    async def async_step_import(self, _data: dict[str, Any] | None = None) -> Any:
        return self.async_create_entry(title="Virtual home", data={})
