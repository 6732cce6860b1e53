"""Switches: on/off."""

from __future__ import annotations

from typing import Any

from homeassistant.components.switch import SwitchEntity

from .entity import VirtualEntity, added


class VirtualSwitch(VirtualEntity, SwitchEntity):
    def restore(self) -> None:
        self._attr_is_on = self.spec.get("state") == "on"

    async def async_turn_on(self, **kwargs: Any) -> None:
        self._attr_is_on = True
        self.changed()

    async def async_turn_off(self, **kwargs: Any) -> None:
        self._attr_is_on = False
        self.changed()


async_setup_entry = added(VirtualSwitch, "switch")
