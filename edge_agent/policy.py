"""Permission policy: which tool calls run, which need the user's confirmation, which never run.

A call is decided in this order, and the strictest answer wins (deny > confirm > allow):

1. a tool that is not enabled is denied;
2. a per-tool rule (``[tools]``), else the rule for the call's effect (``[effects]``), else the
   default (read-only and actuating allowed, dangerous confirmed); enabling a tool never lifts
   a deny;
3. *request grounding*, against prompt injection: a call that changes the world must be asked
   for by the user's request, in its direction ("turn on" never grounds an off) and with its
   targets (every word of the name / area / floor it acts on, or of an alias). A question
   ("is the light on?") asks for no change. Tool results and the device list are data, never
   instructions: what appears only there grounds nothing. An ungrounded call is confirmed
   when the model made it before seeing any tool result (it may have just used a word we do
   not know), and denied after (the likely injection);
4. *reach*: a call that would act on more than ``max_targets`` things, or names no target at
   all (every light of the house, every timer), is confirmed, however well grounded.

A policy file (TOML)::

    require_grounding = true
    ungrounded = "confirm"                   # before any tool result
    ungrounded_after_tool_results = "deny"
    max_targets = 3

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
    # The user's request does not ask for this call: a blanket "yes to this turn" (`--yes`,
    # `confirmed=True`) never covers it; only the user looking at this very call can.
    ungrounded: bool = False

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
    max_targets: int = Field(default=3, ge=1)

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
        if decision.action == "deny" or effect is Effect.READ_ONLY:
            return decision
        wide = reach_problem(call, tool, self.max_targets)
        checks = [Decision(action="confirm", reason=wide)] if wide else []
        if self.require_grounding:
            checks += self._grounding(call, tool, user_request, origin_step, context)
        for check in checks:  # the strictest wins; on a tie, the later (grounding) reason
            if _STRICTNESS[check.action] >= _STRICTNESS[decision.action]:
                decision = check
        return decision

    def _grounding(
        self, call: ToolCall, tool: Tool, request: str, origin_step: int, context: Iterable[str]
    ) -> list[Decision]:
        problem = grounding_problem(call, request, tool, context)
        if problem is None:
            return []
        action = self.ungrounded if origin_step == 0 else self.ungrounded_after_tool_results
        where = "" if origin_step == 0 else " (the call came after tool results)"
        return [Decision(action=action, reason=f"{problem}{where}", ungrounded=True)]


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
_TENS = {
    w: 10 * i
    for i, w in enumerate(
        ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"), start=2
    )
}
_UNITS = {
    w: i
    for i, w in enumerate(
        ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine"), start=1
    )
}
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# A question about the world asks for no change ("is the light on?" grounds no turn-on);
# requests phrased as questions ("can you turn on...") start otherwise.
_QUESTION = re.compile(
    r"\s*(is|are|was|were|what|which|who|whose|where|when|why|how|does|do|did|has|have)\b",
    re.IGNORECASE,
)


def grounded(call: ToolCall, user_request: str, tool: Tool, context: Iterable[str] = ()) -> bool:
    """Whether the user's request (plus trusted `context`) asks for this call: a verb of its
    direction and every target and value appear in it, directly or through synonyms."""
    return grounding_problem(call, user_request, tool, context) is None


def grounding_problem(
    call: ToolCall, user_request: str, tool: Tool, context: Iterable[str] = ()
) -> str | None:
    """Why the call is not grounded in the request, or None when it is."""
    if _QUESTION.match(user_request):
        return f"the request is a question; it does not ask to {tool.name}"
    asked = _words(user_request)
    problem = _direction_problem(tool, asked)
    if problem is not None:
        return problem
    trusted = asked | {w for text in context for w in _words(text)}
    for key, value in _grounded_arguments(call.arguments, tool):
        missing = _missing_words(tool, key, value, trusted)
        if missing:
            return f"the request does not mention {key}={value!r} ({', '.join(missing)})"
    return None


def reach_problem(call: ToolCall, tool: Tool, max_targets: int) -> str | None:
    """Why the call acts too widely to run unconfirmed (more than `max_targets` things, or no
    target at all: everything of its kind), or None."""
    grounding, args = tool.grounding, call.arguments
    if grounding.reach is not None:
        count = grounding.reach(args)
    elif grounding.targets and not (_targets(args, tool) or _targets(args, tool, grounding.kinds)):
        count = None  # it declares targets and gives none
    else:
        return None
    if count is None:
        return f"{tool.name} names no target: it would act on everything it can"
    if count > max_targets:
        return f"{tool.name} would act on {count} things (more than {max_targets})"
    return None


def _direction_problem(tool: Tool, asked: set[str]) -> str | None:
    verbs = {_stem(v) for v in tool.grounding.verbs} or _name_words(tool.name)
    if not verbs & asked:
        return (
            f"the request does not ask to {tool.name} (expected one of: {', '.join(sorted(verbs))})"
        )
    both = sorted({_stem(w) for w in tool.grounding.opposites} & asked)
    if both:
        return f"the request says {', '.join(both)} too: unclear whether it asks to {tool.name}"
    return None


def _grounded_arguments(arguments: Mapping[str, Any], tool: Tool) -> list[tuple[str, str]]:
    """The (argument, value) pairs the request must say: targets, kinds unless the thing's own
    name is given (they only narrow it then), and numeric values."""
    grounding = tool.grounding
    found = _targets(arguments, tool)
    if not any(key == "name" for key, _ in found):
        found += _targets(arguments, tool, grounding.kinds)
    numbers = [(k, arguments[k]) for k in grounding.values if k in arguments]
    said = [(k, v) for k, v in numbers if isinstance(v, int | float) and not isinstance(v, bool)]
    return found + [(k, f"{v:g}") for k, v in said]


def _targets(
    arguments: Mapping[str, Any], tool: Tool, keys: tuple[str, ...] | None = None
) -> list[tuple[str, str]]:
    """String arguments among `keys` (the tool's targets by default) that name something:
    "all" names nothing."""
    if keys is None:
        keys = tool.grounding.targets
    if keys is None:
        keys = tuple(k for k, v in arguments.items() if isinstance(v, str))
    values = [(k, arguments[k]) for k in keys if k in arguments]
    return [(k, v) for k, v in values if isinstance(v, str) and _word_list(v)]


def _missing_words(tool: Tool, key: str, value: str, trusted: set[str]) -> list[str]:
    """The words of `value` the request lacks; none when an alias of it is said in full."""
    synonyms = {_stem(k): {_stem(w) for w in v} for k, v in tool.grounding.synonyms.items()}

    def lacking(text: str) -> list[str]:
        return [w for w in _word_list(text) if not ({w} | synonyms.get(w, set())) & trusted]

    missing = lacking(value)
    aliases = tool.grounding.aliases(key, value) if tool.grounding.aliases else ()
    if missing and any(not lacking(alias) for alias in aliases if _word_list(alias)):
        return []
    return missing


def _words(text: str) -> set[str]:
    """The request's words, and the numbers it spells in two words ("fifty-four": 54), which
    a call writes in digits."""
    words = _word_list(text)
    spelled = {
        str(_TENS[tens] + _UNITS[unit]) for tens, unit in zip(words, words[1:], strict=False)
        if tens in _TENS and unit in _UNITS
    }  # fmt: skip
    return set(words) | spelled


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
