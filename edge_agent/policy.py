"""Permission policy: which tool calls run, which need the user's confirmation, which never run.

A call is decided in this order, and the strictest answer wins (deny > confirm > allow):

1. a tool that is not enabled is denied;
2. a per-tool rule (``[tools]``), else the rule for the call's effect (``[effects]``), else the
   default (read-only and actuating allowed, dangerous confirmed); enabling a tool never lifts
   a deny;
3. *request grounding*, against prompt injection: a call that changes the world must be asked
   for by the user's request. Tool results are data, never instructions: an actuation whose
   verb or targets appear only in a tool result is not grounded. An ungrounded call is
   confirmed when the model made it before seeing any tool result (it may have just used a
   word we do not know), and denied after (the likely injection).

A policy file (TOML)::

    require_grounding = true
    ungrounded = "confirm"                   # before any tool result
    ungrounded_after_tool_results = "deny"

    [effects]
    dangerous = "deny"

    [tools]
    HassTurnOff = "confirm"
    get_uptime = "deny"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.errors import ConfigError, ConfirmationRequiredError, PermissionDeniedError
from edge_agent.tools import Tool
from edge_agent.types import Effect, ToolCall

Action = Literal["allow", "deny", "confirm"]
_STRICTNESS: dict[Action, int] = {"allow": 0, "confirm": 1, "deny": 2}


class Decision(BaseModel):
    """What to do with one call, and why (the reason is shown to the user and the model)."""

    model_config = ConfigDict(frozen=True)

    action: Action
    reason: str

    def enforce(self) -> None:
        """Raise PermissionDeniedError or ConfirmationRequiredError unless allowed."""
        if self.action == "deny":
            raise PermissionDeniedError(self.reason)
        if self.action == "confirm":
            raise ConfirmationRequiredError(self.reason)


class EffectRules(BaseModel):
    """What to do with a call of each effect, unless a per-tool rule says otherwise."""

    model_config = ConfigDict(extra="forbid")

    read_only: Action = "allow"
    actuating: Action = "allow"
    dangerous: Action = "confirm"

    def for_effect(self, effect: Effect) -> Action:
        action: Action = getattr(self, effect.value)
        return action


class Policy(BaseModel):
    """The permission policy; `Policy()` is the default, `Policy.from_toml` reads a file."""

    model_config = ConfigDict(extra="forbid")

    tools: dict[str, Action] = Field(default_factory=dict)
    effects: EffectRules = Field(default_factory=EffectRules)
    require_grounding: bool = True
    ungrounded: Action = "confirm"
    ungrounded_after_tool_results: Action = "deny"

    @classmethod
    def from_toml(cls, path: Path) -> Policy:
        """Read a policy file; ConfigError names the file and what is wrong in it."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read policy file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"policy file {path} is not valid TOML: {exc}") from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"policy file {path} is invalid: {_problems(exc)}") from exc

    def decide(self, tool_name: str, effect: Effect, enabled_tools: Collection[str]) -> Decision:
        """The rule for a call of `tool_name` with `effect` (steps 1 and 2, no grounding)."""
        if tool_name not in enabled_tools:
            return Decision(action="deny", reason=f"{tool_name} is not an enabled tool")
        if tool_name in self.tools:
            action = self.tools[tool_name]
            return Decision(action=action, reason=f"the policy says {action} for {tool_name}")
        action = self.effects.for_effect(effect)
        source = "the policy" if effect.value in self.effects.model_fields_set else "default"
        return Decision(action=action, reason=f"{source}: {action} {effect.value} calls")

    def decide_call(
        self,
        call: ToolCall,
        tool: Tool,
        enabled_tools: Collection[str],
        *,
        user_request: str,
        origin_step: int = 0,
        context: Iterable[str] = (),
    ) -> Decision:
        """The full decision for a call whose arguments are already validated.

        origin_step: the agent step that produced the call; 0 means no tool result was in the
            model's context yet. context: trusted strings that may ground a target besides the
            request (the speaker's area set on the device)."""
        effect = tool.effect_of(call.arguments)
        decision = self.decide(call.name, effect, enabled_tools)
        if decision.action == "deny" or effect is Effect.READ_ONLY or not self.require_grounding:
            return decision
        problem = grounding_problem(call, user_request, tool, context)
        if problem is None:
            return decision
        action = self.ungrounded if origin_step == 0 else self.ungrounded_after_tool_results
        where = "" if origin_step == 0 else " (the call came after tool results)"
        ungrounded = Decision(action=action, reason=f"{problem}{where}")
        stricter = _STRICTNESS[ungrounded.action] >= _STRICTNESS[decision.action]
        return ungrounded if stricter else decision


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )


# --- request grounding ------------------------------------------------------------------------

_STOPWORDS = frozenset({
    "a", "an", "the", "in", "of", "at", "to", "for", "my", "our", "your", "all", "any", "this",
    "that", "these", "those", "and", "or", "please", "hass", "is", "are", "be", "it", "its",
})  # fmt: skip
_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def grounded(call: ToolCall, user_request: str, tool: Tool, context: Iterable[str] = ()) -> bool:
    """Whether the user's request (plus trusted `context`) asks for this call: its verb and
    every target value appear in it, directly or through the tool's synonyms."""
    return grounding_problem(call, user_request, tool, context) is None


def grounding_problem(
    call: ToolCall, user_request: str, tool: Tool, context: Iterable[str] = ()
) -> str | None:
    """Why the call is not grounded in the request, or None when it is."""
    synonyms = {_stem(k): {_stem(w) for w in v} for k, v in tool.grounding.synonyms.items()}
    asked = _words(user_request)
    verbs = {_stem(v) for v in tool.grounding.verbs} or _name_words(tool.name)
    if not verbs & asked:
        return (
            f"the request does not ask to {tool.name} (expected one of: {', '.join(sorted(verbs))})"
        )
    trusted = asked | {w for text in context for w in _words(text)}
    for key, value in _targets(call.arguments, tool):
        missing = [w for w in _word_list(value) if not ({w} | synonyms.get(w, set())) & trusted]
        if missing:
            return f"the request does not mention {key}={value!r} ({', '.join(missing)})"
    return None


def _targets(arguments: Mapping[str, Any], tool: Tool) -> list[tuple[str, str]]:
    keys = tool.grounding.targets
    if keys is None:
        keys = tuple(k for k, v in arguments.items() if isinstance(v, str))
    values = [(k, arguments[k]) for k in keys if k in arguments]
    return [(k, v) for k, v in values if isinstance(v, str)]


def _words(text: str) -> set[str]:
    return set(_word_list(text))


def _word_list(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


def _name_words(name: str) -> set[str]:
    return {_stem(w.lower()) for w in _CAMEL.findall(name)} - _STOPWORDS


def _stem(word: str) -> str:
    # Plurals only: "lights" asks for "light", "switches" for "switch".
    word = word.lower()
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word
