"""Weather: a condition, temperature and humidity (no forecast)."""

from __future__ import annotations

from homeassistant.components.weather import WeatherEntity
from homeassistant.const import UnitOfTemperature

from .entity import VirtualEntity, added


class VirtualWeather(VirtualEntity, WeatherEntity):
    _attr_native_temperature_unit = UnitOfTemperature.CELSIUS

    def restore(self) -> None:
        self._attr_condition = self.spec.get("condition", "sunny")
        self._attr_native_temperature = self.spec.get("temperature", 20.0)
        self._attr_humidity = self.spec.get("humidity", 50)


async_setup_entry = added(VirtualWeather, "weather")
