"""What each Home Assistant intent does to a `HomeBackend`: one method per intent.

Arguments are the intent's slots, already validated by the tool's schema. Results are small
JSON-ready dicts the model reads back; failures raise `HomeTargetError` (or
`ToolArgumentsError`) whose message tells the model what the home has instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from edge_agent.errors import HomeTargetError, HomeUnavailableError, ToolArgumentsError
from edge_agent.skills.home.ambiguity import question, says_all
from edge_agent.skills.home.backend import HomeBackend, Target, find_area, fold
from edge_agent.skills.home.inventory import Entity, Inventory, Timer

# the service each domain runs for "turn on" / "turn off" (Home Assistant's intent handlers)
TURN_ON = {"cover": "open_cover", "valve": "open_valve", "lock": "lock"}
TURN_OFF = {"cover": "close_cover", "valve": "close_valve", "lock": "unlock"}
SWITCHABLE = {"light", "switch", "fan", "input_boolean", "media_player", "climate"}
ON_ONLY = {"scene", "script"}
ON_DOMAINS = SWITCHABLE | ON_ONLY | set(TURN_ON)  # what "turn on" acts on
OFF_DOMAINS = SWITCHABLE | set(TURN_OFF)
COVERS = {"cover", "valve"}  # what a position is set on
# what each device action acts on: among domains, or in its one domain
ACTS_ON = {"HassTurnOn": ON_DOMAINS, "HassTurnOff": OFF_DOMAINS, "HassSetPosition": COVERS}
ACTS_ON_DOMAIN = {
    "HassLightSet": "light", "HassClimateSetTemperature": "climate", "HassVacuumStart": "vacuum",
    "HassVacuumReturnToBase": "vacuum", "HassMediaPause": "media_player",
    "HassMediaUnpause": "media_player", "HassMediaNext": "media_player",
    "HassMediaPrevious": "media_player", "HassSetVolume": "media_player",
    "HassMediaSearchAndPlay": "media_player",
}  # fmt: skip
DANGEROUS_DOMAINS = {"lock", "valve", "alarm_control_panel"}
DANGEROUS_COVERS = {"garage", "door", "gate"}


def is_dangerous(entity: Entity) -> bool:
    """Opening or unlocking this lets someone in or something out (water, gas)."""
    return entity.domain in DANGEROUS_DOMAINS or (
        entity.domain == "cover" and entity.device_class in DANGEROUS_COVERS
    )


def target(args: dict[str, Any], domain: str | None = None) -> Target:
    """The `Target` named by a call's slots; `domain` fixes it for single-domain intents."""
    return Target(
        name=args.get("name"),
        area=args.get("area"),
        floor=args.get("floor"),
        domain=[domain] if domain else _as_list(args.get("domain")),
        device_class=_as_list(args.get("device_class")),
    )


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _brief(entity: Entity) -> dict[str, Any]:
    return {"name": entity.name, "state": entity.state}


@runtime_checkable
class IntentBackend(Protocol):
    """A home that runs intents itself (a real Home Assistant's intent API)."""

    def handle_intent(
        self, intent: str, slots: dict[str, Any], speaker_area: str | None = None
    ) -> dict[str, Any] | None:
        """The intent's result, or None when the home cannot take this call."""


class HomeIntents:
    """The handlers of the `home` toolset, bound to one backend."""

    def __init__(
        self,
        backend: HomeBackend,
        speaker_area: str | None = None,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.backend = backend
        self.speaker_area = speaker_area  # a device setting: where this satellite stands
        self.now = now
        self.request: str | None = None  # the user's words this turn (set by the toolset)

    def through_backend(self, intent: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        """`handler`, tried after the backend's own handling of the intent where it has one,
        so a real Home Assistant applies its own semantics."""

        def run(**args: Any) -> Any:
            if isinstance(self.backend, IntentBackend):
                self.check_target(intent, args)  # HA 2024.1.6 would guess: ask instead
                done = self.backend.handle_intent(intent, args, self.speaker_area)
                if done is not None:
                    return done
            return handler(**args)

        return run

    def resolve(self, args: dict[str, Any], domain: str | None = None) -> list[Entity]:
        return self.backend.resolve(target(args, domain), self.speaker_area)

    def targets(
        self,
        args: dict[str, Any],
        domain: str | None = None,
        domains: set[str] | None = None,
        prefer: str | None = None,
    ) -> list[Entity]:
        """What an action acts on (of `domains`; those in state `prefer` if a name-less target
        has some: "pause" means the players playing); a vague target spread over several areas
        is asked about (`ambiguity.question`), never acted on house-wide."""
        entities = self._matches(args, domain, domains, prefer)
        self._ask_if_vague(args, entities)
        return entities

    def check_target(self, intent: str, args: dict[str, Any]) -> None:
        """Raise the question `targets` asks when a device action's target is vague; for a
        backend that runs intents itself (HA 2024.1.6 acts on every match, or on the first of
        a shared name), call this first. What matches nothing, or a home that cannot be read,
        the backend answers in its own words."""
        if intent in ACTS_ON:
            domain, domains, prefer = None, ACTS_ON[intent], None
        elif intent in ACTS_ON_DOMAIN:
            domain, domains = ACTS_ON_DOMAIN[intent], None
            prefer = {"HassMediaUnpause": "paused", "HassMediaSearchAndPlay": None}.get(
                intent, "playing" if domain == "media_player" else None
            )
        else:
            return
        try:
            entities = self._matches(args, domain, domains, prefer)
        except (HomeTargetError, HomeUnavailableError):
            return
        self._ask_if_vague(args, entities)

    def _matches(
        self, args: dict[str, Any], domain: str | None, domains: set[str] | None, prefer: str | None
    ) -> list[Entity]:
        area = None if says_all(self.request) else self.speaker_area  # "all": the whole house
        entities = self.backend.resolve(target(args, domain), area)
        entities = [e for e in entities if domains is None or e.domain in domains]
        if prefer and not args.get("name"):
            entities = [e for e in entities if e.state == prefer] or entities
        return entities

    def _ask_if_vague(self, args: dict[str, Any], entities: list[Entity]) -> None:
        ask = question(args, entities, self.backend.inventory, self.request)
        if ask is not None:
            raise HomeTargetError(ask)

    def reach(
        self, args: dict[str, Any], domains: set[str] | None = None, domain: str | None = None
    ) -> int:
        """How many entities a device call would act on (of `domains`); 0 if none matches."""
        try:
            return len(self.targets(args, domain, domains))
        except (HomeTargetError, HomeUnavailableError):
            return 0  # the call will act on nothing: it fails, or asks which

    def timers_reach(self, args: dict[str, Any]) -> int:
        """How many timers a call for several would act on; 0 if none matches."""
        try:
            return len(self._timers(args, one=False, allow_none=True))
        except HomeTargetError:
            return 0

    # --- on / off / position ------------------------------------------------------------------

    def turn_on(self, **args: Any) -> dict[str, Any]:
        return self._switch(args, TURN_ON, ON_DOMAINS, "turned on")

    def turn_off(self, **args: Any) -> dict[str, Any]:
        return self._switch(args, TURN_OFF, OFF_DOMAINS, "turned off")

    def _switch(
        self, args: dict[str, Any], services: dict[str, str], domains: set[str], done: str
    ) -> dict[str, Any]:
        entities = self.targets(args, domains=domains)
        if not entities:
            raise HomeTargetError(f"nothing matching {_said(args)} can be {done}")
        changed = []
        for domain in sorted({e.domain for e in entities}):
            ids = [e.id for e in entities if e.domain == domain]
            service = services.get(domain, "turn_on" if done == "turned on" else "turn_off")
            changed += self.backend.call_service(domain, service, ids)
        return {"done": done, "entities": [_brief(e) for e in changed]}

    def set_position(self, **args: Any) -> dict[str, Any]:
        entities = self.targets(args, domains=COVERS)
        if not entities:
            raise HomeTargetError(f"no cover or valve matches {_said(args)}")
        changed = []
        for domain in sorted({e.domain for e in entities}):
            ids = [e.id for e in entities if e.domain == domain]
            data = {"position": args["position"]}
            changed += self.backend.call_service(domain, f"set_{domain}_position", ids, data)
        return {"done": "position set", "entities": [_brief(e) for e in changed]}

    # --- lights, climate, vacuum, media -------------------------------------------------------

    def light_set(self, **args: Any) -> dict[str, Any]:
        if args.get("brightness") is None and args.get("color") is None:
            raise ToolArgumentsError("HassLightSet needs brightness or color")
        data = {"brightness_pct": args.get("brightness"), "color_name": args.get("color")}
        return self._service(
            args, "light", "turn_on", {k: v for k, v in data.items() if v is not None}
        )

    def set_temperature(self, **args: Any) -> dict[str, Any]:
        return self._service(
            args, "climate", "set_temperature", {"temperature": args["temperature"]}
        )

    def vacuum_start(self, **args: Any) -> dict[str, Any]:
        return self._service(args, "vacuum", "start")

    def vacuum_return(self, **args: Any) -> dict[str, Any]:
        return self._service(args, "vacuum", "return_to_base")

    def media(self, service: str) -> Callable[..., dict[str, Any]]:
        """A handler running one media_player service (pause, play, next, previous) on the
        players it can change: resume what is paused, pause or skip what is playing."""
        prefer = "paused" if service == "media_play" else "playing"
        return lambda **args: self._service(args, "media_player", service, prefer=prefer)

    def set_volume(self, **args: Any) -> dict[str, Any]:
        data = {"volume_level": args["volume_level"] / 100}  # the slot is a percentage
        return self._service(args, "media_player", "volume_set", data)

    def search_and_play(self, **args: Any) -> dict[str, Any]:
        item = self.backend.search_media(args["search_query"], args.get("media_class"))
        if item is None:
            raise HomeTargetError(f"no media found for {args['search_query']!r}")
        data = {"media_content_id": item.title, "media_class": item.media_class or "music"}
        return self._service(args, "media_player", "play_media", data)

    def _service(
        self,
        args: dict[str, Any],
        domain: str,
        service: str,
        data: dict[str, Any] | None = None,
        prefer: str | None = None,
    ) -> dict[str, Any]:
        ids = [e.id for e in self.targets(args, domain, prefer=prefer)]
        changed = self.backend.call_service(domain, service, ids, data)
        return {"done": f"{domain}.{service}", "entities": [_brief(e) for e in changed]}

    # --- lists --------------------------------------------------------------------------------

    def shopping_add(self, item: str) -> dict[str, Any]:
        return self._list("Shopping List", "add_item", {"item": item})

    def shopping_complete(self, item: str) -> dict[str, Any]:
        return self._list("Shopping List", "update_item", {"item": item, "status": "completed"})

    def list_add(self, item: str, name: str) -> dict[str, Any]:
        return self._list(name, "add_item", {"item": item})

    def list_complete(self, item: str, name: str) -> dict[str, Any]:
        return self._list(name, "update_item", {"item": item, "status": "completed"})

    def _list(self, name: str, service: str, data: dict[str, Any]) -> dict[str, Any]:
        (todo, *_) = self.resolve({"name": name}, "todo")
        self.backend.call_service("todo", service, [todo.id], data)
        return {"done": service, "list": todo.name, "item": data["item"]}

    # --- questions ----------------------------------------------------------------------------

    def get_state(self, **args: Any) -> dict[str, Any]:
        return state_answer(self.resolve(args), self.backend.inventory, args.get("state"))

    def get_temperature(self, **args: Any) -> dict[str, Any]:
        entities = self.resolve(args, "climate")
        return {
            "entities": [
                {"name": e.name, "current_temperature": e.attributes.get("current_temperature")}
                for e in entities
            ]
        }

    def get_weather(self, name: str | None = None) -> dict[str, Any]:
        weather = self.resolve({"name": name}, "weather")[0]
        temperature = weather.attributes.get("temperature")
        return {"name": weather.name, "condition": weather.state, "temperature": temperature}

    def current_date(self) -> dict[str, Any]:
        return {"date": self.now().date().isoformat()}

    def current_time(self) -> dict[str, Any]:
        return {"time": self.now().time().strftime("%H:%M")}

    def nevermind(self) -> dict[str, Any]:
        return {"done": "nothing"}

    def respond(self, response: str | None = None) -> dict[str, Any]:
        return {"response": response or ""}

    def broadcast(self, message: str) -> dict[str, Any]:
        return {"done": "broadcast", "message": message}

    # --- timers -------------------------------------------------------------------------------

    def start_timer(self, **args: Any) -> dict[str, Any]:
        h, m, s = (int(args.get(k) or 0) for k in ("hours", "minutes", "seconds"))
        if h + m + s <= 0:
            raise ToolArgumentsError("HassStartTimer needs hours, minutes or seconds above zero")
        area = self._area_id(self.speaker_area)
        timer = Timer(
            id=f"timer_{uuid.uuid4().hex[:8]}",
            name=args.get("name"),
            area=area,
            start_hours=h,
            start_minutes=m,
            start_seconds=s,
            total_seconds_left=h * 3600 + m * 60 + s,
            conversation_command=args.get("conversation_command"),
        )
        return {"done": "timer started", "timer": _timer_view(self.backend.put_timer(timer))}

    def cancel_all_timers(self, area: str | None = None) -> dict[str, Any]:
        timers = self._timers({"area": area}, one=False, allow_none=True)
        for t in timers:
            self.backend.remove_timer(t.id)
        return {"done": "timers cancelled", "count": len(timers)}

    def cancel_timer(self, **args: Any) -> dict[str, Any]:
        (timer,) = self._timers(args)
        self.backend.remove_timer(timer.id)
        return {"done": "timer cancelled", "timer": _timer_view(timer)}

    def pause_timer(self, **args: Any) -> dict[str, Any]:
        return self._change_timer(args, "timer paused", is_active=False)

    def unpause_timer(self, **args: Any) -> dict[str, Any]:
        return self._change_timer(args, "timer resumed", is_active=True)

    def increase_timer(self, **args: Any) -> dict[str, Any]:
        return self._change_timer(args, "timer increased", add=_duration(args))

    def decrease_timer(self, **args: Any) -> dict[str, Any]:
        return self._change_timer(args, "timer decreased", add=-_duration(args))

    def timer_status(self, **args: Any) -> dict[str, Any]:
        return {"timers": [_timer_view(t) for t in self._timers(args, one=False, allow_none=True)]}

    def _change_timer(
        self, args: dict[str, Any], done: str, is_active: bool | None = None, add: int = 0
    ) -> dict[str, Any]:
        (timer,) = self._timers(args)
        update: dict[str, Any] = {"total_seconds_left": max(0, timer.total_seconds_left + add)}
        if is_active is not None:
            update["is_active"] = is_active
        changed = self.backend.put_timer(timer.model_copy(update=update))
        return {"done": done, "timer": _timer_view(changed)}

    def _timers(
        self, args: dict[str, Any], one: bool = True, allow_none: bool = False
    ) -> list[Timer]:
        """Timers matching the slots; for a single-timer intent the most recently started."""
        timers = [t for t in self.backend.timers() if self._timer_matches(t, args)]
        if not timers and not allow_none:
            raise HomeTargetError(f"no timer matches {_said(args) or 'the request'}")
        return timers[-1:] if one else timers

    def _timer_matches(self, timer: Timer, args: dict[str, Any]) -> bool:
        name = args.get("name")
        names = name if isinstance(name, list) else [name] if name else []
        if names and fold(timer.name or "") not in {fold(str(n)) for n in names}:
            return False
        if args.get("area") and timer.area != self._area_id(args["area"], strict=True):
            return False
        starts = ("start_hours", "start_minutes", "start_seconds")
        return all(args.get(k) is None or getattr(timer, k) == args[k] for k in starts)

    def _area_id(self, name: str | None, strict: bool = False) -> str | None:
        if not name:
            return None
        try:
            return find_area(self.backend.inventory, name).id
        except HomeTargetError:
            if strict:
                raise
            return None  # a speaker area the inventory does not know


def _duration(args: dict[str, Any]) -> int:
    seconds = sum(
        int(args.get(k) or 0) * f for k, f in (("hours", 3600), ("minutes", 60), ("seconds", 1))
    )
    if seconds <= 0:
        raise ToolArgumentsError("give hours, minutes or seconds above zero")
    return seconds


def _timer_view(timer: Timer) -> dict[str, Any]:
    view = {"name": timer.name, "seconds_left": timer.total_seconds_left, "active": timer.is_active}
    return {k: v for k, v in view.items() if v is not None}


def _said(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items() if v is not None)


def state_answer(entities: list[Entity], home: Inventory, state: Any) -> dict[str, Any]:
    """HassGetState's answer: each entity's state, or which of them are in `state` (one
    state or a list of them)."""
    found = [
        {"name": e.name, "area": home.area_name(e.area), "state": e.state}
        | ({"unit": e.attributes["unit_of_measurement"]} if "unit_of_measurement" in e.attributes
           else {})
        for e in entities
    ]  # fmt: skip
    if state is None:
        return {"entities": found}
    states = state if isinstance(state, list) else [state]
    wanted = {fold(str(s)) for s in states}
    return {
        "state": state,
        "matched": [f["name"] for f in found if fold(str(f["state"])) in wanted],
        "unmatched": [f["name"] for f in found if fold(str(f["state"])) not in wanted],
    }
