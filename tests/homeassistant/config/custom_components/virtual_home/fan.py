"""Fans: on/off and speed as a percentage (off is 0 %)."""

from __future__ import annotations

from typing import Any

from homeassistant.components.fan import FanEntity, FanEntityFeature

from .entity import VirtualEntity, added


class VirtualFan(VirtualEntity, FanEntity):
    _attr_supported_features = FanEntityFeature.SET_SPEED

    def restore(self) -> None:
        self._attr_percentage = self.spec.get("percentage", 0)

    async def async_turn_on(self, percentage: int | None = None, *args: Any, **kw: Any) -> None:
        await self.async_set_percentage(percentage or self.spec.get("on_percentage", 50))

    async def async_turn_off(self, **kwargs: Any) -> None:
        await self.async_set_percentage(0)

    async def async_set_percentage(self, percentage: int) -> None:
        self._attr_percentage = percentage
        self.changed()


async_setup_entry = added(VirtualFan, "fan")
