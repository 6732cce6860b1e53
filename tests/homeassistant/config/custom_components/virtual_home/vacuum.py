"""Vacuums: start (cleaning), pause, stop (idle) and return to base (returning)."""

from __future__ import annotations

from typing import Any

from homeassistant.components.vacuum import (
    STATE_CLEANING,
    STATE_IDLE,
    STATE_PAUSED,
    STATE_RETURNING,
    StateVacuumEntity,
    VacuumEntityFeature,
)

from .entity import VirtualEntity, added

_F = VacuumEntityFeature


class VirtualVacuum(VirtualEntity, StateVacuumEntity):
    _attr_supported_features = _F.START | _F.PAUSE | _F.STOP | _F.RETURN_HOME | _F.STATE

    def restore(self) -> None:
        self._attr_state = self.spec.get("state", "docked")

    def _go(self, state: str) -> None:
        self._attr_state = state
        self.changed()

    async def async_start(self) -> None:
        self._go(STATE_CLEANING)

    async def async_pause(self) -> None:
        self._go(STATE_PAUSED)

    async def async_stop(self, **kwargs: Any) -> None:
        self._go(STATE_IDLE)

    async def async_return_to_base(self, **kwargs: Any) -> None:
        self._go(STATE_RETURNING)


async_setup_entry = added(VirtualVacuum, "vacuum")
