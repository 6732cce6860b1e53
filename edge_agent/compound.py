"""A compound request ("turn on the kitchen light and then lock the front door") as one
result of its steps: the toolset's ``split`` hook names the steps, the agent runs each as its
own turn (see `Agent.run`), and this module says when a step stops the rest, what the one
answer says, and where a step held for confirmation resumes."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Protocol

from edge_agent.types import AgentResult, ToolCall, Usage

_STOPS = frozenset({"error", "invalid", "timeout", "denied", "needs_confirmation"})
_ROUTES = ("local", "local_fallback", "escalated")  # the farthest a step went names the whole
_HELD_MAX = 64


def stops(result: AgentResult) -> bool:
    """Whether a step ends the request: it failed, was denied, or waits for a yes. A step
    that answered in words without a call did not fail: the later steps still run."""
    return result.outcome != "answered" or any(c.status in _STOPS for c in result.tool_calls)


def combine(request: str, steps: list[str], results: list[AgentResult]) -> AgentResult:
    """One result for the steps that ran (``results``, in order, for the first ones of
    ``steps``): every call, one answer, the last step's outcome and id (it is in the log, so
    feedback reaches it). The steps left undone are named in the answer and the error."""
    last = results[-1]
    left = steps[len(results) :]
    answer = " ".join(r.answer for r in results if r.answer)
    error = last.error
    if left:
        undone = "; ".join(repr(s) for s in left)
        answer = f"{answer} I stopped there and did not do: {undone}.".strip()
        if error is not None:
            error = f"{error} (step {len(results)} of {len(steps)}; not done: {undone})"
    return last.model_copy(
        update={
            "request": request, "answer": answer, "error": error,
            "tool_calls": [c for r in results for c in r.tool_calls],
            "route": max((r.route for r in results), key=_ROUTES.index),
            "steps": sum(r.steps for r in results),
            "latency_ms": sum(r.latency_ms for r in results),
            "usage": _usage(results), "timings": _timings(results),
        }
    )  # fmt: skip


def _usage(results: list[AgentResult]) -> Usage:
    return Usage(
        prompt_tokens=sum(r.usage.prompt_tokens for r in results),
        completion_tokens=sum(r.usage.completion_tokens for r in results),
        cached_prompt_tokens=sum(r.usage.cached_prompt_tokens for r in results),
    )


def _timings(results: list[AgentResult]) -> dict[str, float]:
    total: dict[str, float] = {}
    for r in results:
        for key, ms in r.timings.items():
            total[key] = total.get(key, 0.0) + ms
    first = results[0].timings.get("first_token_ms")  # what the user waited for
    if first is not None:
        total["first_token_ms"] = first
    return total


class RunOne(Protocol):
    """One step as its own turn, routed and logged as its own request (`Agent.run`'s)."""

    def __call__(self, text: str, area: str | None, approved: ToolCall | None) -> AgentResult: ...


class CompoundRuns:
    """Runs an agent's compound requests, and remembers where each that stopped for a
    confirmation stands: the user's yes (``Agent.run(approved=...)`` with the same words)
    resumes at the step that asked, so the steps before it never run twice. Bounded; the
    oldest is forgotten first."""

    def __init__(self) -> None:
        self._held: OrderedDict[tuple[str, str | None, str], int] = OrderedDict()

    def run(
        self, text: str, steps: list[str], area: str | None, approved: ToolCall | None,
        run_one: RunOne,
    ) -> AgentResult:  # fmt: skip
        """Each step its own turn (a one-call row the adapter and the teacher know), in
        order; a step that fails, is denied or waits for a yes stops the rest."""
        start = 0
        if approved is not None:
            held = self._held.pop((text, area, _call_key(approved)), None)
            if held is None:  # not held here (a restart): only the call the user confirmed
                return run_one(text, area, approved)
            start = held
        results: list[AgentResult] = []
        for index in range(start, len(steps)):
            results.append(run_one(steps[index], area, approved if index == start else None))
            if stops(results[-1]):
                break
        self._hold(text, area, results[-1], start + len(results) - 1)
        return combine(text, steps[start:], results)

    def _hold(self, text: str, area: str | None, result: AgentResult, index: int) -> None:
        if result.outcome != "needs_confirmation" or not result.tool_calls:
            return
        self._held[(text, area, _call_key(result.tool_calls[-1].call))] = index
        while len(self._held) > _HELD_MAX:
            self._held.popitem(last=False)


def _call_key(call: ToolCall) -> str:
    return json.dumps([call.name, call.arguments], sort_keys=True, default=str)
