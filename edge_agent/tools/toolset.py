"""Tools an agent can call, grouped in toolsets, with validated arguments and a per-call effect.

A tool comes from a typed Python function (signature + docstring → JSON schema via pydantic)
or from data (a JSON schema, e.g. one per Home Assistant intent). Both end up the same: one
pydantic model validates the arguments, and the schema the grammar and the prompt see is
generated from that model, so what the decoder can emit and what validation accepts agree.
Optional arguments are simply left out (never ``null``) and every object is closed
(``additionalProperties: false``)::

    from typing import Annotated, Literal
    from pydantic import Field
    from edge_agent.tools import Tool, Toolset, execute, get_toolset, register_toolset, tool
    from edge_agent.types import Effect

    @tool(effect=Effect.ACTUATING, timeout_s=2.0)
    def set_light(
        name: str,
        brightness: Annotated[int, Field(ge=0, le=100)] = 100,
        color: Literal["red", "white"] | None = None,
    ) -> str:
        \"\"\"Sets a light's brightness.

        Args:
            name: Name of the light.
            brightness: Percent.
        \"\"\"
        return f"{name} at {brightness}%"

    turn_off = Tool.from_schema(
        "HassTurnOff", "Turns off a device", {"type": "object", "properties": {...}},
        handler=lambda **args: ...,                       # called with the validated arguments
        effect=lambda args: Effect.DANGEROUS if args.get("domain") == "lock" else Effect.ACTUATING,
        grounding=Grounding(verbs=("off", "close"), opposites=("on", "open"), synonyms={...}),
    )
    demo = Toolset("demo", [set_light, turn_off], description="…", prompt="…")
    register_toolset("demo", lambda: demo)              # built on the first get_toolset("demo")

    t = get_toolset("demo").get("HassTurnOff")         # UnknownToolError names close matches
    args = t.validate({"name": "front door", "domain": "lock"})  # ToolArgumentsError names fields
    t.effect_of(args)                                   # Effect.DANGEROUS: the effect of this call
    execute(t, args)                                    # worker thread; ToolTimeoutError, ...
    get_toolset("demo").call_schema()                   # anyOf of {"name", "arguments"} objects

A handler may raise a ``ToolError`` itself (``ToolExecutionError("no light named 'x'")``):
its message reaches the model unchanged. Any other exception is wrapped.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import inspect
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from pydantic import BaseModel, ValidationError

from edge_agent.errors import (
    ToolArgumentsError,
    ToolDefinitionError,
    ToolError,
    ToolExecutionError,
    ToolTimeoutError,
    UnknownToolError,
)
from edge_agent.tools.schema import (
    JsonSchema,
    clean_parameters,
    model_from_schema,
    model_from_signature,
    parse_docstring,
    render_type,
)
from edge_agent.types import Effect

__all__ = [
    "ARGUMENT_ORDER",
    "EffectRule",
    "ToolSchema",
    "Grounding",
    "Tool",
    "Toolset",
    "execute",
    "fingerprint",
    "tool",
]

EffectRule: TypeAlias = Effect | Callable[[Mapping[str, Any]], Effect]
DEFAULT_TIMEOUT_S = 5.0
# A tool schema's key for its arguments' declared order. The grammar writes the required ones,
# then the optional ones, each in this order; sync and the host store keep schemas as
# sorted-key JSON, which loses the order of ``properties`` but not this list.
ARGUMENT_ORDER = "argument_order"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Grounding:
    """What a user's request must say for a call of this tool to count as asked for, and what
    the call reaches (see `policy.grounding_problem` and `policy.reach_problem`).

    verbs: words that say what the call does, in its direction; one must appear ("off",
        "close"). Never a word both directions share ("turn", "switch"), nor a noun alone
        ("timer", "list"): "turn on" must not ask for an off. Empty: the tool's name words.
    opposites: words of the other direction ("on", "open"); a request with both is ambiguous.
    targets: argument names whose values say what is acted on; every word of a given value
        (or of one of its `aliases`) must appear. None: every string argument.
    kinds: argument names that say what kind of thing is acted on (domain, device_class):
        grounded like targets unless the call gives the thing's own ``name``.
    values: numeric argument names whose value the request must say (digits or a synonym).
    synonyms: a word → other words a request may use for it ("light": ("lamp",)).
    aliases: (argument, value) → other names of that value (a device's aliases).
    reach: how many things a call would act on; None when it names no target at all.
    """

    verbs: tuple[str, ...] = ()
    opposites: tuple[str, ...] = ()
    targets: tuple[str, ...] | None = None
    kinds: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: Callable[[str, str], Iterable[str]] | None = None
    reach: Callable[[Mapping[str, Any]], int | None] | None = None


class Tool:
    """One callable tool: a name, a description, an arguments model, a handler, an effect."""

    def __init__(
        self,
        name: str,
        description: str,
        arguments_model: type[BaseModel],
        *,
        handler: Callable[..., Any],
        effect: EffectRule,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        grounding: Grounding | None = None,
    ) -> None:
        if not _NAME.match(name):
            raise ToolDefinitionError(f"tool name {name!r} must be 1-64 of [A-Za-z0-9_.-]")
        self.name = name
        self.description = description
        self.handler = handler
        self.timeout_s = timeout_s
        self.grounding = grounding or Grounding()
        self._effect = effect
        self._model = arguments_model
        self._schema = clean_parameters(name, arguments_model)

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        effect: EffectRule,
        name: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        grounding: Grounding | None = None,
    ) -> Tool:
        """A tool from a typed function; see the module docstring for what is read from it."""
        summary, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
        tool_name = name or fn.__name__
        model = model_from_signature(tool_name, fn, arg_docs)
        return cls(
            tool_name, summary, model, handler=fn, effect=effect, timeout_s=timeout_s,
            grounding=grounding,
        )  # fmt: skip

    @classmethod
    def from_schema(
        cls,
        name: str,
        description: str,
        schema: Mapping[str, Any],
        *,
        handler: Callable[..., Any],
        effect: EffectRule,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        grounding: Grounding | None = None,
    ) -> Tool:
        """A tool from a JSON schema of its parameters (object of string, integer, number,
        boolean, enum and arrays of those, with min/max bounds and lengths)."""
        model = model_from_schema(name, schema)
        return cls(
            name, description, model, handler=handler, effect=effect, timeout_s=timeout_s,
            grounding=grounding,
        )  # fmt: skip

    def parameters_schema(self) -> JsonSchema:
        """JSON schema of the arguments: properties in declaration order, closed object."""
        return copy.deepcopy(self._schema)

    def call_schema(self) -> JsonSchema:
        """JSON schema of one call of this tool: ``{"name": <const>, "arguments": {...}}``."""
        return {
            "type": "object",
            "properties": {"name": {"const": self.name}, "arguments": self.parameters_schema()},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }

    def validate(self, arguments: Any) -> dict[str, Any]:
        """The arguments checked and coerced, defaults filled in, unset optionals left out.

        Raises ToolArgumentsError naming every bad field."""
        if not isinstance(arguments, Mapping):
            got = type(arguments).__name__
            raise ToolArgumentsError(f"{self.name}: arguments must be an object, got {got}")
        try:
            parsed = self._model.model_validate(dict(arguments))
        except ValidationError as exc:
            raise ToolArgumentsError(_explain(self, exc)) from None
        dumped = parsed.model_dump(by_alias=True)
        return {k: v for k, v in dumped.items() if v is not None or k in self._required}

    def effect_of(self, arguments: Mapping[str, Any]) -> Effect:
        """What this call (these validated arguments) does to the world."""
        if isinstance(self._effect, Effect):
            return self._effect
        return Effect(self._effect(arguments))

    def run(self, arguments: Any) -> Any:
        """Validate and call the handler in this thread, with no timeout (see `execute`)."""
        return self.handler(**self.validate(arguments))

    def describe_compact(self) -> str:
        """One prompt line: ``Name(arg: type, opt?: "a"|"b") — description``."""
        props = self._schema["properties"]
        params = ", ".join(
            f"{key}{'' if key in self._required else '?'}: {render_type(prop)}"
            for key, prop in props.items()
        )
        return f"{self.name}({params}) — {self.description}".rstrip(" —")

    @property
    def _required(self) -> list[str]:
        required: list[str] = self._schema.get("required", [])
        return required

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


def tool(
    effect: EffectRule,
    name: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    grounding: Grounding | None = None,
) -> Callable[[Callable[..., Any]], Tool]:
    """Decorator: turn a typed function into a `Tool` (the function stays its handler)."""

    def wrap(fn: Callable[..., Any]) -> Tool:
        return Tool.from_function(
            fn, effect=effect, name=name, timeout_s=timeout_s, grounding=grounding
        )

    return wrap


def execute(tool: Tool, arguments: Any, timeout_s: float | None = None) -> Any:
    """Validate, then run the handler in a worker thread and wait at most the timeout.

    Python cannot kill a thread: a tool that hangs is abandoned (a daemon thread, so it never
    holds up exit) and the caller gets ToolTimeoutError on time. Handler exceptions come back
    as ToolExecutionError, unless the handler raised a ToolError meant for the model."""
    args = tool.validate(arguments)
    limit = tool.timeout_s if timeout_s is None else timeout_s
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = tool.handler(**args)
        except BaseException as exc:  # contained: reported to the model, never crashes the loop
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        raise ToolTimeoutError(f"{tool.name} did not finish within {limit:g} s and was abandoned")
    error = box.get("error")
    if isinstance(error, ToolError):
        raise error
    if error is not None:
        message = f"{tool.name} failed: {type(error).__name__}: {error}"
        raise ToolExecutionError(message) from error
    return box.get("result")


ContextFn: TypeAlias = Callable[[str, str | None], str | None]
SplitFn: TypeAlias = Callable[[str, str | None], list[str]]


class Toolset:
    """A named group of tools with a short description and the prompt that introduces them."""

    def __init__(
        self,
        name: str,
        tools: Iterable[Tool],
        description: str = "",
        prompt: str = "",
        context: ContextFn | None = None,
        *,
        split: SplitFn | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.prompt = prompt
        # What the device knows that a request leaves out (the home's matching devices, the
        # speaker's area): (request, area) -> text for the prompt, or None.
        self.context = context
        # A request that asks for several things, as the steps it asks for: (request, area)
        # -> each step's words, one call each (the agent runs them in turn); None: one step.
        self.split = split
        self._tools: dict[str, Tool] = {}
        for t in tools:
            if t.name in self._tools:
                raise ToolDefinitionError(f"toolset {name!r} has two tools named {t.name!r}")
            self._tools[t.name] = t

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool:
        """The tool by name; UnknownToolError lists the closest names the toolset has."""
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(_unknown_tool_message(self, name)) from None

    def subset(self, names: Iterable[str]) -> Toolset:
        """The same toolset limited to `names` (e.g. the enabled ones), in this toolset's order."""
        wanted = set(names)
        for n in wanted:
            self.get(n)
        kept = [t for t in self._tools.values() if t.name in wanted]
        return Toolset(self.name, kept, self.description, self.prompt, split=self.split)

    def call_schema(self) -> JsonSchema:
        """JSON schema of any one valid call: the union of the tools' call schemas."""
        if not self._tools:
            raise ToolDefinitionError(f"toolset {self.name!r} has no tools to call")
        return {"anyOf": [t.call_schema() for t in self._tools.values()]}

    def describe_compact(self) -> str:
        """One line per tool, for the prompt."""
        return "\n".join(t.describe_compact() for t in self._tools.values())

    def schemas(self) -> list[ToolSchema]:
        """What the tools look like from outside, in order: name, description, parameters,
        the arguments' declared order (`ARGUMENT_ORDER`) and the effect where it does not
        depend on the arguments. What the log keeps and the host rebuilds the toolset from
        (`from_schemas`); handlers stay on the device."""
        return [_schema_of(t) for t in self._tools.values()]

    @functools.cached_property
    def fingerprint(self) -> str:
        """A stable identity of the tools' schemas: two toolsets with the same tools, in the
        same order, with their arguments in the same order, share it wherever they were
        built (the skill id of a client's tools)."""
        return fingerprint(self.schemas())

    @property  # not cached: an MCP server's tools can change
    def legacy_fingerprint(self) -> str:
        """The fingerprint devices gave these tools before schemas named their argument order
        (`ARGUMENT_ORDER`): what their turns, still in logs and the host store, name."""
        return fingerprint([_unordered(s) for s in self.schemas()])

    @classmethod
    def from_schemas(
        cls,
        name: str,
        schemas: Iterable[Mapping[str, Any]],
        *,
        handler: Callable[[str], Callable[..., Any]] | None = None,
        prompt: str = "",
    ) -> Toolset:
        """A toolset from `schemas()` output (or OpenAI function specs). ``handler(name)``
        gives each tool's handler; without one the tools validate and constrain calls but
        cannot run here (the host training on them, a client that runs its own). A schema's
        `ARGUMENT_ORDER` orders its properties; without one (a client's specs, an older
        log) they keep the order they come in. ToolDefinitionError for an order that does
        not name each argument once."""
        tools = [_tool_of(dict(s), handler) for s in schemas]
        return cls(name, tools, prompt=prompt)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"Toolset({self.name!r}, {self.names})"


ToolSchema: TypeAlias = dict[str, Any]


def fingerprint(schemas: Iterable[Mapping[str, Any]]) -> str:
    """32 hex digits of the SHA-256 of the schemas' canonical JSON."""
    canonical = json.dumps(list(schemas), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _schema_of(t: Tool) -> ToolSchema:
    parameters = t.parameters_schema()
    schema: ToolSchema = {
        "name": t.name, "description": t.description, "parameters": parameters,
        ARGUMENT_ORDER: list(parameters["properties"]),
    }  # fmt: skip
    if isinstance(t._effect, Effect):
        schema["effect"] = t._effect.value
    return schema


def _unordered(schema: ToolSchema) -> ToolSchema:
    return {k: v for k, v in schema.items() if k != ARGUMENT_ORDER}


def _tool_of(schema: dict[str, Any], handler: Callable[[str], Callable[..., Any]] | None) -> Tool:
    name = schema.get("name")
    if not isinstance(name, str):
        raise ToolDefinitionError(f"a tool schema needs a name: {str(schema)[:80]}")
    try:
        effect = Effect(schema.get("effect", Effect.READ_ONLY.value))
    except ValueError:
        raise ToolDefinitionError(f"{name}: unknown effect {schema.get('effect')!r}") from None
    params = schema.get("parameters") or {"type": "object", "properties": {}}
    if schema.get(ARGUMENT_ORDER) is not None and isinstance(params, dict):
        params = _in_order(name, params, schema[ARGUMENT_ORDER])
    run = handler(name) if handler else _not_here(name)
    return Tool.from_schema(
        name, str(schema.get("description") or ""), params, handler=run, effect=effect
    )


def _in_order(name: str, params: dict[str, Any], order: Any) -> dict[str, Any]:
    """The parameters with their properties in the logged order (sorted-key JSON loses it)."""
    props = params.get("properties") or {}
    named_once = (
        isinstance(order, list) and all(isinstance(k, str) for k in order)
        and isinstance(props, dict) and len(order) == len(props) and set(order) == set(props)
    )  # fmt: skip
    if not named_once:
        raise ToolDefinitionError(
            f"{name}: its argument order {order!r} must name each of its arguments once "
            f"({', '.join(map(str, props))})"
        )
    return params | {"properties": {k: props[k] for k in order}}


def _not_here(name: str) -> Callable[..., Any]:
    def run(**_: Any) -> Any:
        raise ToolExecutionError(f"{name} runs where its toolset was defined, not here")

    return run


def _unknown_tool_message(toolset: Toolset, name: str) -> str:
    close = difflib.get_close_matches(name, toolset.names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"it has: {', '.join(toolset.names)}"
    return f"no tool {name!r} in toolset {toolset.name!r}; {hint}"


def _explain(tool: Tool, exc: ValidationError) -> str:
    allowed = ", ".join(tool.parameters_schema()["properties"]) or "none"
    problems = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            problems.append(f"{field}: unknown argument (allowed: {allowed})")
        elif err["type"] == "missing":
            problems.append(f"{field}: required argument missing")
        else:
            problems.append(f"{field}: {err['msg']} (got {err['input']!r})")
    return f"invalid arguments for {tool.name}: " + "; ".join(problems)
