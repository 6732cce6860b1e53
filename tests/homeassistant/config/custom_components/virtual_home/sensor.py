"""Sensors: a measurement with a device class and unit (temperature, humidity)."""

from __future__ import annotations

from homeassistant.components.sensor import SensorEntity, SensorStateClass

from .entity import VirtualEntity, added


class VirtualSensor(VirtualEntity, SensorEntity):
    _attr_state_class = SensorStateClass.MEASUREMENT

    def restore(self) -> None:
        self._attr_device_class = self.spec.get("device_class")
        self._attr_native_unit_of_measurement = self.spec.get("unit")
        self._attr_native_value = self.spec.get("value")


async_setup_entry = added(VirtualSensor, "sensor")
