"""Score a command by what it does to the home, not by its exact arguments.

The agent's call runs on a simulated copy of the command's home; the gold call runs on another
fresh copy of the same home. The command is right when both leave the home in the same state
and answer the same (a question changes nothing, so its answer is what counts): "the bedroom
lamp" for "Bedroom Lamp", or `area` where the gold named the one device in it, still count.
Where the simulated home cannot run the gold call at all (an HA test row whose home lacks what
it names), it cannot judge, and exact match decides. Exact match (HA's test rule: same tool,
same slots) is reported beside it.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_agent.agent import Agent, AgentConfig
from edge_agent.backends.base import Backend
from edge_agent.errors import ToolError
from edge_agent.skills.home.inventory import Inventory
from edge_agent.skills.home.score import call_matches
from edge_agent.skills.home.simulated import SimulatedHome
from edge_agent.skills.home.toolset import home_toolset
from edge_agent.types import AgentResult, ToolCall

_CHATTER = ("speech",)  # words about the result, not the result


class Item(Protocol):
    """What can be scored: an HA split row (`dataset.Row`) or a synthetic `synth.Command`."""

    @property
    def id(self) -> str: ...
    @property
    def sentence(self) -> str: ...
    @property
    def intent(self) -> str: ...
    @property
    def slots(self) -> dict[str, Any]: ...
    @property
    def speaker_area(self) -> str | None: ...
    def inventory(self) -> Inventory: ...
    def call(self) -> ToolCall: ...


@dataclass(frozen=True)
class Effect:
    """What a call did to a home: whether it ran, its answer, and the home afterwards."""

    ok: bool
    answer: str
    state: str


def snapshot(home: SimulatedHome) -> str:
    """The home's live state as canonical text: every entity's state and attributes, the
    timers (by content: their ids are the home's bookkeeping)."""
    inventory = home.inventory
    entities = {e.id: [e.state, e.attributes] for e in inventory.entities}
    timers = sorted(
        json.dumps(t.model_dump(exclude={"id"}), sort_keys=True) for t in inventory.timers
    )
    return _canonical({"entities": entities, "timers": timers})


def _canonical(value: Any) -> str:
    # case does not change what a home does ("Milk" and "milk" are the same item)
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False).casefold()


def answer_of(result: Any) -> str:
    if isinstance(result, dict):
        result = {k: v for k, v in result.items() if k not in _CHATTER}
    return _canonical(result)


def execute(
    call: ToolCall, inventory: Inventory, area: str | None = None, request: str = ""
) -> Effect:
    """Run one call on a fresh simulated copy of `inventory`, as the device's toolset would."""
    home = SimulatedHome(inventory)
    tools = home_toolset(backend=home, speaker_area=area)
    if tools.context is not None:
        tools.context(request, area)  # the per-request hook: the speaker's area for handlers
    try:
        result = tools.get(call.name).run(dict(call.arguments))
    except (ToolError, KeyError, ValueError, TypeError):  # an unknown tool, bad arguments
        return Effect(ok=False, answer="", state=snapshot(home))
    return Effect(ok=True, answer=answer_of(result), state=snapshot(home))


def same_effect(predicted: Effect, gold: Effect) -> bool:
    return (
        gold.ok
        and predicted.ok
        and (predicted.state, predicted.answer)
        == (
            gold.state,
            gold.answer,
        )
    )


@dataclass
class Scored:
    id: str
    intent: str
    exact: bool
    state: bool
    latency_ms: float
    predicted: ToolCall | None
    by_state: bool = True  # False: the gold call fails in the simulated home; exact decided


@dataclass
class StateReport:
    rows: list[Scored] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return _summary(self.rows)

    def per_intent(self) -> dict[str, dict[str, float]]:
        groups: dict[str, list[Scored]] = defaultdict(list)
        for row in self.rows:
            groups[row.intent].append(row)
        return {intent: _summary(rows) for intent, rows in sorted(groups.items())}


def _summary(rows: Sequence[Scored]) -> dict[str, float]:
    n = len(rows)
    return {
        "n": n,
        "exact": sum(r.exact for r in rows) / n if n else 0.0,
        "state": sum(r.state for r in rows) / n if n else 0.0,
        "p50_ms": statistics.median(r.latency_ms for r in rows) if n else 0.0,
        "judged_by_exact": sum(not r.by_state for r in rows),
    }


def score_call(item: Item, predicted: ToolCall | None, effect: Effect | None = None) -> Scored:
    """Exact and state-scored for one prediction (`effect`: what it did, if it already ran)."""
    gold = execute(item.call(), item.inventory(), item.speaker_area, item.sentence)
    if effect is None and predicted is not None:
        effect = execute(predicted, item.inventory(), item.speaker_area, item.sentence)
    exact = call_matches(item.call().arguments, item.intent, predicted)
    if not gold.ok:  # the simulated home cannot run the gold call: it cannot judge, exact does
        return Scored(item.id, item.intent, exact, exact, 0.0, predicted, by_state=False)
    state = effect is not None and same_effect(effect, gold)
    return Scored(item.id, item.intent, exact, state, 0.0, predicted)


def evaluate_state(
    backend: Backend,
    items: Sequence[Item],
    *,
    adapter: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> StateReport:
    """One agent step per command on a simulated copy of its home, scored both ways."""
    config = AgentConfig(max_steps=1, repair_attempts=0, stop_after_call=True)
    report = StateReport()
    for i, item in enumerate(items):
        home = SimulatedHome(item.inventory())
        agent = Agent(backend, home_toolset(backend=home), config=config, adapter=adapter)
        started = time.perf_counter()
        result = agent.run(item.sentence, area=item.speaker_area, confirmed=True)
        latency = result.timings.get("generate_ms", (time.perf_counter() - started) * 1000)
        scored = score_call(item, *_what_ran(result, home))
        scored.latency_ms = latency
        report.rows.append(scored)
        if progress:
            progress(i + 1, len(items))
    return report


def _what_ran(result: AgentResult, home: SimulatedHome) -> tuple[ToolCall | None, Effect | None]:
    if not result.tool_calls:
        return None, None
    first = result.tool_calls[0]
    ok = first.status == "ok"
    return first.call, Effect(ok=ok, answer=answer_of(first.result) if ok else "",
                              state=snapshot(home))  # fmt: skip
