"""Thermostats: heat or off, a target temperature and the room's current temperature."""

from __future__ import annotations

from typing import Any

from homeassistant.components.climate import ClimateEntity, ClimateEntityFeature, HVACMode
from homeassistant.const import ATTR_TEMPERATURE, UnitOfTemperature

from .entity import VirtualEntity, added


class VirtualClimate(VirtualEntity, ClimateEntity):
    _attr_hvac_modes = [HVACMode.HEAT, HVACMode.OFF]
    _attr_supported_features = ClimateEntityFeature.TARGET_TEMPERATURE
    _attr_temperature_unit = UnitOfTemperature.CELSIUS
    _attr_target_temperature_step = 0.5

    def restore(self) -> None:
        self._attr_hvac_mode = HVACMode(self.spec.get("hvac_mode", "heat"))
        self._attr_current_temperature = self.spec.get("current_temperature", 20.0)
        self._attr_target_temperature = self.spec.get("temperature", 20.0)

    async def async_set_temperature(self, **kwargs: Any) -> None:
        self._attr_target_temperature = kwargs.get(ATTR_TEMPERATURE, self.target_temperature)
        if "hvac_mode" in kwargs:
            self._attr_hvac_mode = HVACMode(kwargs["hvac_mode"])
        self.changed()

    async def async_set_hvac_mode(self, hvac_mode: HVACMode) -> None:
        self._attr_hvac_mode = hvac_mode
        self.changed()


async_setup_entry = added(VirtualClimate, "climate")
