"""The base of every virtual device's entity."""

from __future__ import annotations

from typing import Any

from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import Entity

from . import DOMAIN


class VirtualEntity(Entity):
    """A device of home.yaml: entity `<domain>.<id>` named after its device, in its area."""

    _attr_has_entity_name = True
    _attr_name = None
    _attr_should_poll = False

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.entity_id = f"{spec['domain']}.{spec['id']}"
        self._attr_unique_id = spec["id"]
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, spec["id"])},
            name=spec["name"],
            suggested_area=spec.get("area"),
            manufacturer="edge-agent tests",
            model=f"virtual {spec['domain']}",
        )
        self.restore()

    def restore(self) -> None:
        """Take the home.yaml state again (the device layer is these attributes)."""
        raise NotImplementedError

    def changed(self) -> None:
        self.async_write_ha_state()

    async def async_added_to_hass(self) -> None:
        self.hass.data[DOMAIN]["entities"].append(self)
        aliases = set(self.spec.get("aliases", []))
        er.async_get(self.hass).async_update_entity(self.entity_id, aliases=aliases)


def added(entity_class: type[VirtualEntity], domain: str) -> Any:
    """The platform's async_setup_entry: one `entity_class` per device of `domain`."""
    from . import devices

    async def async_setup_entry(hass: Any, _entry: Any, add: Any) -> None:
        add([entity_class(spec) for spec in devices(hass, domain)])

    return async_setup_entry
