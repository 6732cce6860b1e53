"""Covers: open, close, stop and position (0 closed .. 100 open)."""

from __future__ import annotations

from typing import Any

from homeassistant.components.cover import ATTR_POSITION, CoverEntity, CoverEntityFeature

from .entity import VirtualEntity, added


class VirtualCover(VirtualEntity, CoverEntity):
    _attr_supported_features = (
        CoverEntityFeature.OPEN
        | CoverEntityFeature.CLOSE
        | CoverEntityFeature.STOP
        | CoverEntityFeature.SET_POSITION
    )

    def restore(self) -> None:
        self._attr_device_class = self.spec.get("device_class")
        self._move(self.spec.get("position", 0))

    def _move(self, position: int) -> None:
        self._attr_current_cover_position = position
        self._attr_is_closed = position == 0

    async def async_open_cover(self, **kwargs: Any) -> None:
        self._move(100)
        self.changed()

    async def async_close_cover(self, **kwargs: Any) -> None:
        self._move(0)
        self.changed()

    async def async_set_cover_position(self, **kwargs: Any) -> None:
        self._move(kwargs[ATTR_POSITION])
        self.changed()

    async def async_stop_cover(self, **kwargs: Any) -> None:
        self.changed()  # moves are instant: nothing to stop


async_setup_entry = added(VirtualCover, "cover")
