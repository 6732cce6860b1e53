"""Inventory loading (HA fixtures, inline fixtures, user files) and the simulated home's state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.errors import HomeTargetError, InventoryError
from edge_agent.skills.home import Inventory, SimulatedHome, Target, load_inventory, resolve
from edge_agent.skills.home.dataset import load_rows
from edge_agent.skills.home.inventory import Entity, Timer, expand_name, inventory_from_fixtures


@pytest.fixture(scope="module")
def home() -> Inventory:
    return Inventory.default()


def test_default_inventory_reads_the_shared_fixtures(home: Inventory) -> None:
    kitchen = next(a for a in home.areas if a.name == "Kitchen")
    assert home.floor_by_id(kitchen.floor).name == "First Floor"  # type: ignore[union-attr]
    curtain = home.entity("cover.curtain_left")
    assert curtain is not None
    assert (curtain.domain, curtain.device_class, curtain.state) == ("cover", "curtain", "open")
    assert home.area_name(curtain.area) == "Living Room"
    assert len(home.timers) == 3 and home.timers[0].is_active is False
    assert "The Office" in {m.title for m in home.media}


def test_in_out_states_keep_the_real_value_and_the_spoken_one(home: Inventory) -> None:
    phone = home.entity("binary_sensor.phone_battery")
    assert phone is not None and (phone.state, phone.spoken_state) == ("off", "normal")


def test_hassil_optional_parts_become_name_and_alias(home: Inventory) -> None:
    assert expand_name("Trader Joe[']s") == ("Trader Joes", ["Trader Joe's"])
    assert expand_name("Kitchen") == ("Kitchen", [])
    todo = home.entity("todo.trader_joes")
    assert todo is not None and todo.name == "Trader Joes" and todo.aliases == ["Trader Joe's"]


def test_inline_fixtures_replace_the_shared_home() -> None:
    row = next(r for r in load_rows() if r.id == "HassTurnOff/name_only.yaml#1.0")
    inventory = row.inventory()
    assert [(e.id, e.name) for e in inventory.entities] == [
        ("light.overhead_light", "Overhead Light"),
        ("cover.sliding_door", "Sliding Door"),
    ]
    assert inventory.areas == [] and inventory.timers == []


def test_per_test_overrides_of_timers_and_media() -> None:
    rows = {r.id: r for r in load_rows()}
    assert rows["HassTimerStatus/default.yaml#0.0"].inventory().timers == []
    two = rows["HassTimerStatus/default.yaml#2.0"].inventory().timers
    assert [t.total_seconds_left for t in two] == [30, 10]
    assert rows["HassMediaSearchAndPlay/default.yaml#1.0"].inventory().media == []
    assert (
        rows["HassMediaSearchAndPlay/default.yaml#0.0"].inventory().media[0].title == "The Office"
    )


def test_user_inventory_json_with_same_named_entities(tmp_path: Path) -> None:
    path = tmp_path / "home.json"
    data = {
        "areas": [{"name": "Den"}],
        "entities": [
            {"name": "Lamp", "domain": "light", "area": "den"},
            {"name": "Lamp", "domain": "light"},
        ],
    }
    path.write_text(json.dumps(data))
    inventory = load_inventory(path)
    assert [e.id for e in inventory.entities] == ["light.lamp", "light.lamp_2"]
    assert inventory.areas[0].id == "den"


@pytest.mark.parametrize(
    "content", ["[1, 2]", "entities: [{domain: light}]", "floors: [{name: x}]\n  bad: : :"]
)
def test_bad_inventory_files_raise_inventory_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "home.yaml"
    path.write_text(content)
    with pytest.raises(InventoryError):
        load_inventory(path)


def test_missing_inventory_file_raises_inventory_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read"):
        load_inventory(tmp_path / "nope.yaml")


# --- target resolution ------------------------------------------------------------------------


def ids(entities: list[Entity]) -> set[str]:
    return {e.id for e in entities}


def test_resolve_by_area_and_domain(home: Inventory) -> None:
    found = resolve(home, Target(area="kitchen", domain=["light"]))
    assert ids(found) == {
        "light.kitchen_countertop",
        "light.kitchen_ceiling",
        "light.kitchen_cabinets",
    }


def test_resolve_by_name_is_case_insensitive_and_uses_aliases(home: Inventory) -> None:
    assert ids(resolve(home, Target(name="  bedroom   LAMP "))) == {"light.bedroom_lamp"}
    assert ids(resolve(home, Target(name="trader joe's"))) == {"todo.trader_joes"}


def test_resolve_by_floor_and_device_class(home: Inventory) -> None:
    found = resolve(home, Target(floor="First Floor", domain=["cover"], device_class=["curtain"]))
    assert ids(found) == {"cover.curtain_left", "cover.curtain_right"}


def test_name_all_means_every_entity_of_the_domain(home: Inventory) -> None:
    found = resolve(home, Target(name="all", area="Living Room", domain=["fan"]))
    assert ids(found) == {"fan.ceiling"}


def test_speaker_area_narrows_only_when_no_area_is_named(home: Inventory) -> None:
    here = resolve(home, Target(domain=["light"]), speaker_area="Living Room")
    assert ids(here) == {"light.living_room_lamp", "light.play_corner"}
    everywhere = resolve(home, Target(domain=["light"]))
    assert len(everywhere) > len(here)
    named = resolve(home, Target(area="Kitchen", domain=["light"]), speaker_area="Living Room")
    assert all(e.area == "kitchen_id" for e in named)


def test_nothing_matching_raises_a_message_for_the_model(home: Inventory) -> None:
    with pytest.raises(HomeTargetError, match="candidates: .*Bedroom Lamp"):
        resolve(home, Target(name="Attic Lamp", domain=["light"]))
    with pytest.raises(HomeTargetError, match="no area named 'Attic'; areas: .*Kitchen"):
        resolve(home, Target(area="Attic"))
    with pytest.raises(HomeTargetError, match="no floor named"):
        resolve(home, Target(floor="Roof"))
    with pytest.raises(HomeTargetError, match="has no alarm_control_panel entities"):
        resolve(home, Target(domain=["alarm_control_panel"]))


# --- the simulated home -----------------------------------------------------------------------


def test_state_file_is_seeded_changed_and_reloaded(tmp_path: Path) -> None:
    state = tmp_path / "state" / "home.json"
    first = SimulatedHome(state_path=state)
    assert state.exists()
    first.call_service("light", "turn_on", ["light.bedroom_lamp"], {"brightness_pct": 40})
    first.put_timer(Timer(id="t1", name="tea", total_seconds_left=60))
    again = SimulatedHome(state_path=state)
    lamp = again.inventory.entity("light.bedroom_lamp")
    assert lamp is not None and lamp.state == "on" and lamp.attributes["brightness"] == 102
    assert [t.name for t in again.timers()] == [None, "pizza", None, "tea"]
    again.remove_timer("t1")
    assert "t1" not in {t.id for t in SimulatedHome(state_path=state).timers()}


def test_state_file_overlays_an_edited_inventory(tmp_path: Path) -> None:
    state = tmp_path / "home.json"
    SimulatedHome(state_path=state).call_service("lock", "unlock", ["lock.front_door"])
    smaller = inventory_from_fixtures(
        {"entities": [{"name": "Front Door", "id": "lock.front_door"}]}
    )
    reloaded = SimulatedHome(smaller, state_path=state)
    assert [e.id for e in reloaded.inventory.entities] == ["lock.front_door", "todo.shopping_list"]
    assert reloaded.inventory.entities[0].state == "unlocked"


def test_corrupt_state_file_says_how_to_reset(tmp_path: Path) -> None:
    state = tmp_path / "home.json"
    state.write_text("{not json")
    with pytest.raises(InventoryError, match="delete it to reset"):
        SimulatedHome(state_path=state)


def test_services_change_state_like_home_assistant() -> None:
    home = SimulatedHome()
    (cover,) = home.call_service("cover", "set_cover_position", ["cover.bedroom"], {"position": 30})
    assert (cover.state, cover.attributes["current_position"]) == ("open", 30)
    (closed,) = home.call_service("cover", "close_cover", ["cover.bedroom"])
    assert closed.state == "closed"
    (todo,) = home.call_service("todo", "add_item", ["todo.chores"], {"item": "Dishes"})
    assert todo.state == "1"
    (done,) = home.call_service("todo", "update_item", ["todo.chores"], {"item": "dishes"})
    assert done.state == "0" and done.attributes["items"][0]["status"] == "completed"


def test_unsupported_service_or_wrong_domain_is_refused() -> None:
    home = SimulatedHome()
    with pytest.raises(HomeTargetError, match="do not support 'unlock'"):
        home.call_service("light", "unlock", ["light.bedroom_lamp"])
    with pytest.raises(HomeTargetError, match="no lock entity"):
        home.call_service("lock", "unlock", ["light.bedroom_lamp"])


def test_without_state_path_nothing_is_written_and_inventory_is_not_mutated(
    home: Inventory,
) -> None:
    sim = SimulatedHome(home)
    sim.call_service("light", "turn_off", ["light.kitchen_ceiling"])
    assert home.entity("light.kitchen_ceiling").state == "on"  # type: ignore[union-attr]
    assert sim.state_path is None
