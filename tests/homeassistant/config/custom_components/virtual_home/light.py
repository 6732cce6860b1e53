"""Lights: on/off, brightness and (unless `color: false`) HS color."""

from __future__ import annotations

from typing import Any

from homeassistant.components.light import ATTR_BRIGHTNESS, ATTR_HS_COLOR, ColorMode, LightEntity

from .entity import VirtualEntity, added


class VirtualLight(VirtualEntity, LightEntity):
    def restore(self) -> None:
        mode = ColorMode.HS if self.spec.get("color", True) else ColorMode.BRIGHTNESS
        self._attr_color_mode = mode
        self._attr_supported_color_modes = {mode}
        self._attr_is_on = self.spec.get("state") == "on"
        self._attr_brightness = self.spec.get("brightness", 255)
        hs = self.spec.get("hs_color", [0, 0]) if mode == ColorMode.HS else None
        self._attr_hs_color = tuple(hs) if hs else None

    async def async_turn_on(self, **kwargs: Any) -> None:
        self._attr_is_on = True
        self._attr_brightness = kwargs.get(ATTR_BRIGHTNESS, self._attr_brightness)
        self._attr_hs_color = kwargs.get(ATTR_HS_COLOR, self._attr_hs_color)
        self.changed()

    async def async_turn_off(self, **kwargs: Any) -> None:
        self._attr_is_on = False
        self.changed()


async_setup_entry = added(VirtualLight, "light")
