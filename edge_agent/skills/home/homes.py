"""Varied synthetic homes: seedable inventories of several styles, split into train and held-out.

A model that learns from one home learns its names; one that learns from hundreds of homes has to
read the context block instead. Each home is built from a style (how many floors, which rooms),
rooms from a catalog (their devices, with realistic names and aliases), and home-wide things
(weather, people, to-do lists, scenes, timers, media). Same id, same home, on every platform:
the generator draws only from `random.Random(<sha256 of the id>)`.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from edge_agent.skills.home.inventory import (
    Area,
    Entity,
    Floor,
    Inventory,
    MediaItem,
    Timer,
    slug,
)

TRAIN_HOMES = 240
HELDOUT_HOMES = 40
_FLOORS = [
    ("Basement", ["downstairs", "cellar"]), ("Ground Floor", ["main floor", "first floor"]),
    ("Upstairs", ["second floor", "top floor"]), ("Attic", ["loft"]),
]  # fmt: skip


@dataclass(frozen=True)
class Style:
    name: str
    floors: tuple[int, ...]  # indexes into _FLOORS, bottom up
    rooms: tuple[str, ...]  # rooms it always has
    optional: tuple[str, ...]  # rooms it may have
    devices_per_room: tuple[int, int]


STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style("studio", (), ("Studio", "Bathroom"), ("Balcony", "Hallway"), (3, 6)),
        Style("apartment", (), ("Living Room", "Kitchen", "Bedroom", "Bathroom"),
              ("Office", "Balcony", "Hallway", "Kids Room", "Guest Room"), (2, 5)),
        Style("family_house", (1, 2), ("Living Room", "Kitchen", "Master Bedroom", "Kids Room",
              "Bathroom", "Garage"), ("Office", "Dining Room", "Laundry Room", "Hallway",
              "Garden", "Guest Room", "Playroom", "Porch"), (2, 4)),
        Style("villa", (0, 1, 2), ("Living Room", "Kitchen", "Master Bedroom", "Garage",
              "Garden", "Pool"), ("Home Theater", "Gym", "Wine Cellar", "Office", "Library",
              "Guest Room", "Patio", "Dining Room", "Sauna"), (2, 4)),
        Style("farmhouse", (1, 3), ("Kitchen", "Living Room", "Bedroom", "Barn"),
              ("Workshop", "Mudroom", "Greenhouse", "Porch", "Pantry", "Shed"), (2, 4)),
    )
}  # fmt: skip

# room -> (aliases, which floor kind it prefers: -1 lowest, 0 any, 1 highest)
_ROOMS: dict[str, tuple[tuple[str, ...], int]] = {
    "Living Room": (("lounge", "family room"), -1), "Kitchen": ((), -1),
    "Bedroom": (("sleeping room",), 1), "Master Bedroom": (("main bedroom",), 1),
    "Kids Room": (("children's room", "nursery"), 1), "Bathroom": (("bath",), 0),
    "Garage": ((), -1), "Office": (("study", "den"), 0), "Dining Room": ((), -1),
    "Laundry Room": (("utility room",), -1), "Hallway": (("hall", "corridor"), 0),
    "Garden": (("backyard", "yard"), -1), "Guest Room": (("spare room",), 1),
    "Playroom": ((), 1), "Porch": (("front porch",), -1), "Home Theater": (("cinema",), -1),
    "Gym": (("fitness room",), -1), "Wine Cellar": ((), -1), "Library": ((), 0),
    "Patio": (("terrace",), -1), "Sauna": ((), -1), "Pool": (("pool area",), -1),
    "Studio": (("main room",), 0), "Balcony": ((), 0), "Barn": ((), -1),
    "Workshop": (("shop",), -1), "Mudroom": ((), -1), "Greenhouse": ((), -1),
    "Pantry": ((), -1), "Shed": (("tool shed",), -1),
}  # fmt: skip

# (domain, device class, names; "{a}" is the area's name; states it may be in)
_Device = tuple[str, str | None, tuple[str, ...], tuple[str, ...]]
_COMMON: list[_Device] = [
    ("light", None, ("{a} Light", "{a} Lamp", "Ceiling Light", "{a} Ceiling Light",
                     "Floor Lamp", "{a} Spotlights", "Pendant Light", "LED Strip"), ("on", "off")),
    ("light", None, ("Reading Lamp", "Desk Lamp", "{a} Lamps", "Accent Light", "Wall Sconce",
                     "{a} Downlights", "Night Light", "Light Bulb"), ("on", "off")),
    ("switch", "outlet", ("{a} Plug", "Smart Plug", "{a} Outlet", "Power Strip"), ("on", "off")),
    ("fan", None, ("{a} Fan", "Ceiling Fan", "Tower Fan", "Desk Fan"), ("on", "off")),
    ("cover", "window", ("{a} Window", "Skylight", "Roof Window"), ("open", "closed")),
    ("cover", "blind", ("{a} Blinds", "Window Blinds", "Venetian Blinds", "Roller Blind"),
     ("open", "closed")),
    ("cover", "curtain", ("{a} Curtains", "Curtain Left", "Curtain Right", "Drapes"),
     ("open", "closed")),
    ("cover", "shade", ("{a} Shades", "Window Shade"), ("open", "closed")),
    ("binary_sensor", "motion", ("{a} Motion", "{a} Motion Sensor", "Presence Sensor"),
     ("on", "off")),
    ("binary_sensor", "window", ("{a} Window Sensor", "Window Contact"), ("on", "off")),
    ("sensor", "temperature", ("{a} Temperature", "{a} Thermometer"), ("18", "21", "23.5")),
    ("sensor", "humidity", ("{a} Humidity",), ("35", "48", "60")),
    ("media_player", "speaker", ("{a} Speaker", "Smart Speaker", "{a} Sonos", "Outer Speakers",
                                 "Soundbar"), ("playing", "paused", "idle", "off")),
    ("climate", None, ("{a} Thermostat", "{a} Heater", "Radiator", "{a} AC", "Heat Pump"),
     ("heat", "off", "cool")),
]  # fmt: skip
_SPECIAL: dict[str, list[_Device]] = {
    "Living Room": [("media_player", "tv", ("TV", "Living Room TV", "Television", "Apple TV"),
                     ("on", "off", "playing")),
                    ("switch", "switch", ("Christmas Tree", "Fireplace", "Aquarium Light"),
                     ("on", "off"))],
    "Kitchen": [("switch", "switch", ("Coffee Maker", "Kettle", "Dishwasher", "Range Hood"),
                 ("on", "off")),
                ("valve", "water", ("Kitchen Water Valve", "Sink Valve"), ("open", "closed")),
                ("binary_sensor", "moisture", ("Leak Sensor", "Sink Leak Detector"),
                 ("on", "off")),
                ("light", None, ("Under Cabinet Lights", "Island Pendants"), ("on", "off"))],
    "Garage": [("cover", "garage", ("Garage Door", "Garage Door Left", "Garage Door Right"),
                ("open", "closed")),
               ("switch", "outlet", ("Car Charger", "EV Charger", "Freezer Plug"), ("on", "off")),
               ("lock", None, ("Garage Side Door Lock", "Garage Lock"), ("locked", "unlocked"))],
    "Garden": [("valve", "water", ("Sprinklers", "Garden Irrigation", "Drip Line"),
                ("open", "closed")),
               ("light", None, ("Garden Lights", "Path Lights", "String Lights", "Flood Light"),
                ("on", "off")),
               ("cover", "gate", ("Driveway Gate", "Garden Gate"), ("open", "closed"))],
    "Porch": [("lock", None, ("Front Door Lock", "Front Door", "Porch Door Lock"),
               ("locked", "unlocked")),
              ("light", None, ("Porch Light", "Doorbell Light"), ("on", "off")),
              ("binary_sensor", "door", ("Front Door Sensor",), ("on", "off"))],
    "Hallway": [("lock", None, ("Front Door Lock", "Entrance Door", "Main Door Lock"),
                 ("locked", "unlocked")),
                ("binary_sensor", "smoke", ("Smoke Detector", "{a} Smoke Alarm"), ("off",)),
                ("sensor", "battery", ("Doorbell Battery", "Lock Battery"), ("12", "87", "100"))],
    "Bathroom": [("fan", None, ("Exhaust Fan", "Bathroom Fan", "Vent Fan"), ("on", "off")),
                 ("switch", "switch", ("Towel Warmer", "Floor Heating"), ("on", "off")),
                 ("light", None, ("Mirror Light", "Vanity Lights", "Shower Light"),
                  ("on", "off"))],
    "Kids Room": [("light", None, ("Kids Room Lamp", "Night Light", "Star Projector"),
                   ("on", "off")),
                  ("media_player", "speaker", ("Kids Speaker", "Lullaby Speaker"),
                   ("idle", "playing"))],
    "Office": [("light", None, ("Desk Lamp", "Office Lamp"), ("on", "off")),
               ("switch", "outlet", ("Monitor Plug", "Printer"), ("on", "off"))],
    "Pool": [("switch", "switch", ("Pool Pump", "Pool Heater", "Pool Lights"), ("on", "off")),
             ("sensor", "temperature", ("Pool Temperature", "Water Temperature"), ("27",))],
    "Home Theater": [("media_player", "tv", ("Projector", "Theater TV", "Home Cinema"),
                      ("off", "playing")),
                     ("media_player", "receiver", ("AV Receiver", "Denon Receiver"), ("on",))],
    "Barn": [("light", None, ("Barn Lights", "Stable Light"), ("on", "off")),
             ("cover", "door", ("Barn Door", "Hayloft Door"), ("open", "closed")),
             ("switch", "switch", ("Water Heater", "Heat Lamp"), ("on", "off"))],
    "Greenhouse": [("valve", "water", ("Greenhouse Watering", "Mist System"),
                    ("open", "closed")),
                   ("fan", None, ("Greenhouse Vent",), ("on", "off"))],
    "Laundry Room": [("switch", "switch", ("Washer", "Dryer", "Washing Machine"),
                      ("on", "off")),
                     ("binary_sensor", "moisture", ("Washer Leak Sensor",), ("off",))],
    "Master Bedroom": [("cover", "curtain", ("Bedroom Curtains", "Blackout Curtains"),
                        ("open", "closed")),
                       ("light", None, ("Bedside Lamp", "Her Bedside Lamp", "His Bedside Lamp"),
                        ("on", "off"))],
    "Bedroom": [("light", None, ("Bedside Lamp", "Bedroom Lamp"), ("on", "off")),
                ("cover", "blind", ("Bedroom Blinds",), ("open", "closed"))],
}  # fmt: skip
_PEOPLE = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Lena",
    "Marco",
    "Nadia",
    "Oscar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tomas",
]
_LISTS = ["Groceries", "Chores", "Hardware Store", "Packing List", "Birthday Party", "To Do",
          "Pharmacy", "Garden Tasks", "Weekend Projects", "Books To Read"]  # fmt: skip
_SCENES = ["Movie Night", "Good Night", "Romantic", "Relax", "Wake Up", "Dinner Party",
           "Reading", "Away Mode", "Morning Routine", "Party Mode"]  # fmt: skip
_SCRIPTS = ["Bedtime", "Leave Home", "Arrive Home", "Vacation Mode", "Feed The Cat",
            "Start Coffee", "Water The Plants"]  # fmt: skip
_HELPERS = ["Guest Mode", "Vacation Mode Switch", "Do Not Disturb", "Party Switch", "Sleep Mode"]
_TIMER_NAMES = ["pizza", "pasta", "laundry", "eggs", "tea", "oven", "nap", "homework", "bread"]
_MEDIA = [
    ("Abbey Road", "album"),
    ("Bohemian Rhapsody", "track"),
    ("The Office", "tv_show"),
    ("Inception", "movie"),
    ("Taylor Swift", "artist"),
    ("Chill Vibes", "playlist"),
    ("Planet Earth", "tv_show"),
    ("Kind of Blue", "album"),
    ("Hey Jude", "track"),
    ("The Daily", "podcast"),
    ("Jazz Classics", "playlist"),
    ("Interstellar", "movie"),
    ("Coldplay", "artist"),
    ("Imagine", "track"),
    ("Morning Acoustic", "playlist"),
]


def home(home_id: str) -> Inventory:
    """The home with this id ("train-17", "heldout-3", or any string): same id, same home."""
    rng = random.Random(hashlib.sha256(home_id.encode()).hexdigest())
    style = STYLES[sorted(STYLES)[rng.randrange(len(STYLES))]]
    floors = _floors(style, rng)
    areas = _areas(style, floors, rng)
    inventory = Inventory(floors=floors, areas=areas)
    names: set[str] = set()
    for area in areas:
        inventory.entities += _room_devices(area, style, names, rng)
    inventory.entities += _home_wide(areas, names, rng)
    inventory.timers = _timers(areas, rng)
    inventory.media = [MediaItem(title=t, media_class=c) for t, c in rng.sample(_MEDIA, 8)]
    inventory.entities += _helpers(home_id, names)
    return inventory


def home_ids(part: str) -> list[str]:
    """The ids of the train or held-out homes (whole homes never used for training)."""
    if part == "train":
        return [f"train-{i}" for i in range(TRAIN_HOMES)]
    if part == "heldout":
        return [f"heldout-{i}" for i in range(HELDOUT_HOMES)]
    raise ValueError(f"no home part {part!r}; use 'train' or 'heldout'")


def _floors(style: Style, rng: random.Random) -> list[Floor]:
    floors = []
    for index in style.floors:
        name, aliases = _FLOORS[index]
        floors.append(Floor(id=slug(name), name=name, aliases=rng.sample(aliases, 1)))
    return floors


def _areas(style: Style, floors: list[Floor], rng: random.Random) -> list[Area]:
    extra = rng.sample(style.optional, rng.randint(1, min(4, len(style.optional))))
    areas = []
    for name in (*style.rooms, *extra):
        aliases, prefers = _ROOMS[name]
        floor = None
        if floors:
            floor = floors[0 if prefers < 0 else -1 if prefers > 0 else rng.randrange(len(floors))]
        kept = [a for a in aliases if rng.random() < 0.5]
        areas.append(Area(id=slug(name), name=name, floor=floor and floor.id,
                          aliases=kept))  # fmt: skip
    return areas


def _room_devices(area: Area, style: Style, names: set[str], rng: random.Random) -> list[Entity]:
    pool = _SPECIAL.get(area.name, [])
    low, high = style.devices_per_room
    picks = pool[: rng.randint(0, len(pool))] + rng.sample(_COMMON, rng.randint(low, high))
    entities = []
    for domain, device_class, templates, states in picks:
        name = _unique(rng.choice(templates).format(a=area.name), area.name, names)
        state = rng.choice(states)
        entities.append(_entity(domain, device_class, name, area.id, state=state, rng=rng))
    return entities


def _unique(name: str, area: str, names: set[str]) -> str:
    # two "Ceiling Light"s: the second says whose it is, as people name them in HA
    if name in names:
        name = f"{area} {name}" if not name.startswith(area) else f"{name} 2"
    while name in names:
        name += " 2"
    names.add(name)
    return name


def _entity(
    domain: str, device_class: str | None, name: str, area: str | None, *, state: str,
    rng: random.Random,
) -> Entity:  # fmt: skip
    attributes: dict[str, object] = {"device_class": device_class} if device_class else {}
    if domain == "sensor":
        attributes["unit_of_measurement"] = {"temperature": "°C", "humidity": "%"}.get(
            device_class or "", "%"
        )
    if domain == "climate":
        attributes |= {"current_temperature": rng.choice([18, 19.5, 21, 23]), "temperature": 21}
    if domain == "light" and state == "on":
        attributes["brightness_pct"] = rng.choice([30, 60, 100])
    aliases = [name.replace("Lamp", "Light")] if "Lamp" in name and rng.random() < 0.3 else []
    return Entity(id=f"{domain}.{slug(name)}", name=name, aliases=aliases, area=area,
                  state=state, attributes=attributes)  # fmt: skip


def _home_wide(areas: list[Area], names: set[str], rng: random.Random) -> list[Entity]:
    where = {a.id for a in areas}
    entities = [Entity(id="weather.home", name="Home Weather",
                       state=rng.choice(["sunny", "rainy", "cloudy", "snowy"]),
                       attributes={"temperature": rng.randint(-5, 32)})]  # fmt: skip
    for person in rng.sample(_PEOPLE, rng.randint(1, 4)):
        names.add(person)
        entities.append(
            Entity(
                id=f"person.{slug(person)}", name=person, state=rng.choice(["home", "not_home"])
            )  # fmt: skip
        )
    for kind, pool, count in (("todo", _LISTS, 2), ("scene", _SCENES, 3), ("script", _SCRIPTS, 2)):
        for name in rng.sample(pool, rng.randint(1, count)):
            names.add(name)
            state = str(rng.randint(0, 5)) if kind == "todo" else "off"
            entities.append(Entity(id=f"{kind}.{slug(name)}", name=name, state=state))
    if rng.random() < 0.7:
        room = next((a.id for a in areas if a.id in ("living_room", "hallway")), None)
        name = _unique(rng.choice(["Robot Vacuum", "Roomba", "Vacuum", "Dusty"]), "", names)
        entities.append(_entity("vacuum", None, name, room if room in where else None,
                                state="docked", rng=rng))  # fmt: skip
    return entities


def _helpers(home_id: str, names: set[str]) -> list[Entity]:
    # own random stream: adding helpers left every other draw of existing homes as it was
    rng = random.Random(hashlib.sha256(f"{home_id}:helpers".encode()).hexdigest())
    picked = [n for n in rng.sample(_HELPERS, rng.randint(0, 2)) if n not in names]
    names.update(picked)
    return [Entity(id=f"input_boolean.{slug(n)}", name=n, state=rng.choice(["on", "off"]))
            for n in picked]  # fmt: skip


def _timers(areas: list[Area], rng: random.Random) -> list[Timer]:
    timers = []
    labels = rng.sample([None, None, *_TIMER_NAMES], 3)  # two named timers never share a name
    for i in range(rng.randint(0, 3)):
        minutes = rng.choice([2, 5, 10, 15, 20, 30, 45])
        timers.append(
            Timer(
                id=f"timer_{i + 1}",
                name=labels[i],
                area=rng.choice(areas).id,
                start_minutes=minutes,
                total_seconds_left=minutes * 40,
                is_active=rng.random() < 0.8,
            )  # fmt: skip
        )
    return timers
