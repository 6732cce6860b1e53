"""Valves (new in HA 2024.1): open, close, stop and position (0 closed .. 100 open)."""

from __future__ import annotations

from homeassistant.components.valve import ValveEntity, ValveEntityFeature

from .entity import VirtualEntity, added


class VirtualValve(VirtualEntity, ValveEntity):
    _attr_reports_position = True
    _attr_supported_features = (
        ValveEntityFeature.OPEN
        | ValveEntityFeature.CLOSE
        | ValveEntityFeature.STOP
        | ValveEntityFeature.SET_POSITION
    )

    def restore(self) -> None:
        self._attr_device_class = self.spec.get("device_class")
        self._attr_current_valve_position = self.spec.get("position", 0)

    async def async_set_valve_position(self, position: int) -> None:
        # open_valve/close_valve arrive here as 100/0: the entity supports SET_POSITION
        self._attr_current_valve_position = position
        self.changed()

    async def async_stop_valve(self) -> None:
        self.changed()


async_setup_entry = added(VirtualValve, "valve")
