"""`mcp_toolset`: an MCP server's tools as `McpTool`s in an `McpToolset` (see the package)."""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping
from typing import Any, cast

from mcp_types import CallToolResult, ToolAnnotations
from mcp_types import Tool as ToolInfo

from edge_agent.errors import ConfigError, ToolDefinitionError, ToolExecutionError
from edge_agent.tools.mcp.connection import http_opener, stdio_opener
from edge_agent.tools.mcp.session import Session
from edge_agent.tools.schema import parse_docstring
from edge_agent.tools.toolset import Tool, Toolset, fingerprint
from edge_agent.types import Effect

__all__ = ["McpTool", "McpToolset", "effect_of", "mcp_toolset"]

log = logging.getLogger("edge_agent.tools.mcp")


def mcp_toolset(
    name: str,
    *,
    command: list[str] | None = None,
    url: str | None = None,
    env: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> McpToolset:
    """The tools of one MCP server: started with `command` (stdio; it gets `env` over a
    minimal environment: PATH, HOME, …) or reached at `url` (streamable HTTP, with
    `headers`). `timeout_s` bounds the connect and each call."""
    if bool(command) == bool(url):
        raise ConfigError(f"MCP server {name!r} needs exactly one of a command and a url")
    if command:
        opener = stdio_opener(command, env or {})
        session = Session(name, shlex.join(command), opener, timeout_s, stdio=True)
    else:
        opener = http_opener(str(url), headers or {}, timeout_s)
        session = Session(name, str(url), opener, timeout_s, stdio=False)
    try:
        session.start()
        return McpToolset(name, session, session.list_tools())
    except BaseException:
        session.close()
        raise


def effect_of(annotations: ToolAnnotations | None) -> Effect:
    """The effect of a call, from the tool's annotations and the spec's defaults for those it
    leaves out (``readOnlyHint: false``, ``destructiveHint: true``)."""
    hints = annotations or ToolAnnotations()
    if hints.read_only_hint:
        return Effect.READ_ONLY
    if hints.destructive_hint is False:
        return Effect.ACTUATING
    return Effect.DANGEROUS


class McpTool(Tool):
    """A tool an MCP server runs. ``annotations`` are the server's hints as sent.

    ``idempotent`` (``idempotentHint``) is recorded, not acted on: the agent never runs a
    successful change twice in a turn and never retries a failed or timed-out call, so
    whether a repeat would be harmless never comes up; a policy or UI may still read it."""

    annotations: ToolAnnotations | None = None
    idempotent: bool = False
    contract: tuple[dict[str, Any], Effect] | None = None  # what a call was checked against


class McpToolset(Toolset):
    """The tools of one MCP server, over one session that stays open until `close()` and
    reconnects when its server dies or restarts (see `Session`).

    A reconnected server may list other tools than before (an update). Then the toolset takes
    the new list (a warning is logged): the next turns' prompt, grammar, effects (so the
    permission policy) and fingerprint follow it, and a call chosen from the old list is sent
    only if its tool is still listed with the same parameters and effect, else it fails
    without reaching the server."""

    def __init__(self, name: str, session: Session, listed: list[ToolInfo]) -> None:
        self._session = session
        super().__init__(name, _usable_tools(name, listed, self), description=session.description)
        self._fingerprint = fingerprint(self.schemas())
        session.on_reconnect = self._relisted

    @property
    def server(self) -> str:
        """Where the server is: its command or its URL."""
        return self._session.where

    @property
    def connected(self) -> bool:
        """Whether the server is connected now (else the next call reconnects first)."""
        return self._session.connected

    @property
    def next_reconnect_s(self) -> float:
        """Seconds before a call may try to reconnect, after failed tries (0: at once)."""
        return self._session.backoff.wait_s()

    @property  # not cached: the tools can change on a reconnect
    def fingerprint(self) -> str:
        return self._fingerprint

    def close(self) -> None:
        """End the session (a stdio server is stopped); calls after it fail. Idempotent."""
        self._session.close()

    def __enter__(self) -> McpToolset:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self, tool: McpTool, arguments: dict[str, Any]) -> CallToolResult:
        return self._session.call(tool.name, arguments, check=lambda: self._still_listed(tool))

    def _still_listed(self, tool: McpTool) -> None:
        current = self._tools.get(tool.name)
        if current is not tool and getattr(current, "contract", None) != tool.contract:
            now = "no longer lists it" if current is None else "changed its parameters or effect"
            raise ToolExecutionError(
                f"MCP server {self.name!r} {now} since it reconnected: {tool.name} was not sent"
            )

    def _relisted(self, listed: list[ToolInfo]) -> None:
        """A reconnected server's tools: the toolset takes them if they changed."""
        usable = _usable_tools(self.name, listed, self, skipped=logging.DEBUG)  # said at start
        tools: dict[str, Tool] = {t.name: t for t in usable}
        changed = Toolset(self.name, tools.values()).fingerprint
        if changed == self._fingerprint:
            return
        log.warning(
            "MCP server %r lists other tools since it reconnected (%s); the next turns use them",
            self.name, _difference(self._tools, tools),
        )  # fmt: skip
        self._tools, self._fingerprint = tools, changed


def _difference(old: Mapping[str, Tool], new: Mapping[str, Tool]) -> str:
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    kept = sorted(set(old) & set(new))
    changed = [n for n in kept if getattr(old[n], "contract", 0) != getattr(new[n], "contract", 1)]
    parts = [f"{what}: {', '.join(names)}" for what, names in
             (("added", added), ("removed", removed), ("changed", changed)) if names]  # fmt: skip
    return "; ".join(parts) or "descriptions changed"


# --- tools -------------------------------------------------------------------------------------


def _usable_tools(
    name: str, listed: list[ToolInfo], toolset: McpToolset, skipped: int = logging.WARNING
) -> list[McpTool]:
    tools, problems = [], []
    for info in listed:
        try:
            tools.append(_tool(info, toolset))
        except ToolDefinitionError as exc:
            log.log(skipped, "MCP server %r: skipping tool %r: %s", name, info.name, exc)
            problems.append(str(exc))
    if not tools:
        why = "; ".join(problems) if problems else "it lists none"
        raise ToolDefinitionError(
            f"MCP server {name!r} ({toolset.server}) has no usable tool: {why}"
        )
    return tools


def _tool(info: ToolInfo, toolset: McpToolset) -> McpTool:
    effect = effect_of(info.annotations)
    unwrap = _wraps_result(info.output_schema)

    def handler(**arguments: Any) -> Any:
        return _value_of(info.name, toolset._run(tool, arguments), unwrap)

    # A Python SDK server sends the whole docstring: its summary describes the tool, its
    # ``Args:`` the arguments (as for a Python tool), which keeps the prompt short.
    summary, arg_docs = parse_docstring(info.description or info.title or "")
    parameters = _described(_parameters(info.input_schema), arg_docs)
    tool = cast(McpTool, McpTool.from_schema(
        info.name, summary, parameters, handler=handler, effect=effect,
        timeout_s=toolset._session.timeout_s,
    ))  # fmt: skip
    tool.annotations = info.annotations
    tool.contract = (parameters, effect)
    tool.idempotent = bool(info.annotations and info.annotations.idempotent_hint)
    return tool


def _parameters(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The input schema with optional ``X | None`` arguments as plain ``X``: the agent leaves
    an optional argument out rather than sending null (what Python SDK servers generate for
    ``x: str | None = None``)."""
    required = set(schema.get("required", []))
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return dict(schema)
    cleaned = {k: p if k in required else _not_null(p) for k, p in props.items()}
    return {**schema, "properties": cleaned}


def _described(schema: dict[str, Any], arg_docs: Mapping[str, str]) -> dict[str, Any]:
    props = schema.get("properties")
    if not isinstance(props, Mapping) or not arg_docs:
        return schema
    described = {
        key: {**prop, "description": arg_docs[key]}
        if isinstance(prop, Mapping) and key in arg_docs and not prop.get("description")
        else prop
        for key, prop in props.items()
    }
    return {**schema, "properties": described}


def _not_null(prop: Any) -> Any:
    if not isinstance(prop, Mapping):
        return prop
    out = {k: v for k, v in prop.items() if not (k == "default" and v is None)}
    kinds = out.get("type")
    if isinstance(kinds, list) and "null" in kinds and len(kinds) == 2:
        out["type"] = next(k for k in kinds if k != "null")
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options and len(options) == 2:
        del out["anyOf"]
        out = {**next(o for o in options if o != {"type": "null"}), **out}
    return out


def _wraps_result(output_schema: Mapping[str, Any] | None) -> bool:
    """Whether structured results come wrapped as ``{"result": value}`` (how SDK servers
    return a plain value)."""
    props = (output_schema or {}).get("properties")
    return isinstance(props, Mapping) and list(props) == ["result"]


def _value_of(tool: str, result: CallToolResult, unwrap: bool) -> Any:
    text = "\n".join(_text_of(block) for block in result.content)
    if result.is_error:
        raise ToolExecutionError(text or f"{tool} failed (the server gave no reason)")
    structured = result.structured_content
    if structured is not None:
        return structured["result"] if unwrap and list(structured) == ["result"] else structured
    try:
        return json.loads(text)
    except ValueError:
        return text


def _text_of(block: Any) -> str:
    if getattr(block, "type", None) == "text":
        return str(block.text)
    mime = getattr(block, "mime_type", None) or getattr(block, "uri", None) or ""
    return f"[{block.type} {mime}]".replace(" ]", "]")
