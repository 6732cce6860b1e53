"""Locks: lock and unlock."""

from __future__ import annotations

from typing import Any

from homeassistant.components.lock import LockEntity

from .entity import VirtualEntity, added


class VirtualLock(VirtualEntity, LockEntity):
    def restore(self) -> None:
        self._attr_is_locked = self.spec.get("state", "locked") == "locked"

    async def async_lock(self, **kwargs: Any) -> None:
        self._attr_is_locked = True
        self.changed()

    async def async_unlock(self, **kwargs: Any) -> None:
        self._attr_is_locked = False
        self.changed()


async_setup_entry = added(VirtualLock, "lock")
