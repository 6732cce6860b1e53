"""A client's own tools (OpenAI ``tools=``) through the agent step, the router and the log.

    chat request with tools ─► a toolset from the client's schemas (they validate calls and
        constrain the decoder; they never run here)
        ─► its skill: the name the client sets (``metadata.edge_agent_skill`` or the
           ``X-Edge-Agent-Skill`` header), else one derived from the schemas' fingerprint
        ─► that skill's agent (one per skill and tool set; the recently used are kept)
        ─► one turn over the conversation: earlier exchanges, the request (the last user
           message), the calls the client ran since and their results
        ─► a call that passes the policy, returned as ``tool_calls`` (the client runs it),
           or an answer; the router may escalate either way, and the log keeps the turn

A call the client already ran is never proposed again: the turn answers from its result.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent import prompt
from edge_agent.agent import Agent, Conversation, RouteOverride, call_text
from edge_agent.backends.base import Backend
from edge_agent.errors import ConfigError, ToolDefinitionError, ToolError, UnsupportedSchemaError
from edge_agent.server.chat import Reply, check_agent_fits, turn_message
from edge_agent.server.schemas import (
    APIError,
    ChatCompletionRequest,
    ChatMessage,
    Metadata,
    NamedToolChoice,
    ToolCallIn,
)
from edge_agent.settings import Settings
from edge_agent.skills.registry import client_skill, get_skill
from edge_agent.skills.skill import Skill
from edge_agent.tools import Toolset
from edge_agent.types import AgentResult, Effect, Message, ToolCall, ToolOutcome

__all__ = [
    "SKILL_HEADER",
    "SKILL_METADATA",
    "AgentFactory",
    "ClientAgents",
    "ClientRequest",
    "client_reply",
    "client_request",
    "plain_agents",
    "run_client_turn",
]

SKILL_HEADER = "x-edge-agent-skill"
SKILL_METADATA = "edge_agent_skill"
_SKILL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_SYSTEM_ROLES = ("system", "developer")

# (the client's tools, their skill) -> an agent; the server makes it delegate its calls
AgentFactory = Callable[[Toolset, Skill], Agent]


@dataclass(frozen=True)
class ClientRequest:
    """A chat request with the client's tools, as the agent takes it."""

    tools: str  # the function specs as JSON: the toolset cache's key
    messages: Sequence[ChatMessage]
    skill: str | None  # the name the client gave its tools' skill
    required: bool = False
    tool: str | None = None  # the one tool tool_choice names
    route: RouteOverride = "auto"
    # sampling as the client asked; its stop strings are not applied (they would cut the JSON
    # the grammar writes) and max_tokens neither (the call schema sets the budget)
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


def client_request(body: ChatCompletionRequest, header: str | None) -> ClientRequest:
    """The request's tools, conversation, skill name and tool choice; APIError (400) for a
    bad skill name or a tool choice naming no tool of the request."""
    specs = [t.function.model_dump() for t in body.tools or []]
    choice = body.tool_choice
    named = choice.function.name if isinstance(choice, NamedToolChoice) else None
    if named is not None and named not in {s["name"] for s in specs}:
        message = f"tool_choice names {named!r}, which is not one of the tools"
        raise APIError(400, message, param="tool_choice")
    return ClientRequest(
        json.dumps(specs), body.messages, skill_name(body.metadata, header),
        required=choice == "required", tool=named,
        route=body.edge_agent.route if body.edge_agent else "auto",
        temperature=body.temperature or 0.0, top_p=body.top_p or 1.0, seed=body.seed,
    )  # fmt: skip


def skill_name(metadata: Metadata | None, header: str | None) -> str | None:
    """The skill the client filed its tools under, if it named one; APIError (400) if the
    name is not 1-64 of a-z, 0-9, '_' and '-' (first a letter or digit), or it names two."""
    named = (metadata or {}).get(SKILL_METADATA)
    if named is not None and header is not None and named != header:
        message = f"metadata.{SKILL_METADATA} ({named!r}) and the {SKILL_HEADER} header "
        raise APIError(400, message + f"({header!r}) name two skills", param="metadata")
    name = named if named is not None else header
    if name is not None and not _SKILL_NAME.fullmatch(name):
        raise APIError(
            400,
            f"skill name {name[:80]!r}: use 1-64 of a-z, 0-9, '_' and '-', starting with a "
            "letter or digit",
            param=f"metadata.{SKILL_METADATA}",
        )
    return name


# --- agents ------------------------------------------------------------------------------------


class ClientAgents:
    """Agents over clients' tools, one per skill and tool set; the ``size`` most recently
    used are kept. ``make`` builds one (the runtime's, with its log and router); the agent it
    returns is made to delegate its calls. ``settings`` resolve a named skill's config."""

    def __init__(
        self, make: AgentFactory, *, settings: Settings | None = None, size: int = 32
    ) -> None:
        self.make = make
        self.settings = settings
        self.size = size
        self._agents: OrderedDict[tuple[str | None, str], Agent] = OrderedDict()
        self._lock = threading.Lock()

    def agent(self, tools: str, name: str | None) -> Agent:
        """The agent for the client's tools (JSON function specs) under the skill `name`
        (None: their fingerprint's), built on first use; APIError (400) for tools it cannot
        use."""
        toolset = _client_toolset(tools)
        key = (name, toolset.fingerprint)
        with self._lock:
            agent = self._agents.pop(key, None) or self._build(toolset, name)
            self._agents[key] = agent  # the most recently used last
            while len(self._agents) > self.size:
                self._agents.popitem(last=False)
        return agent

    def _build(self, toolset: Toolset, name: str | None) -> Agent:
        skill = skill_for(toolset, name, self.settings)
        try:  # each tool fits; all together may not (the agent builds their union)
            agent = self.make(Toolset(skill.name, toolset, toolset.description), skill)
        except UnsupportedSchemaError as exc:
            raise APIError(400, str(exc), param="tools") from None
        agent.config = agent.config.model_copy(update={"delegate": True})
        check_agent_fits(agent.backend, agent)
        return agent


def plain_agents(backend: Backend) -> ClientAgents:
    """Client agents on `backend` alone: no log, no router (an app built without a runtime)."""
    return ClientAgents(
        lambda tools, skill: Agent(
            backend,
            tools,
            route_mode=skill.route,
            teacher_labels_offline=skill.teacher_labels_offline,
        )  # fmt: skip
    )


def skill_for(toolset: Toolset, name: str | None, settings: Settings | None) -> Skill:
    """The skill the client's tools are filed under: the named one as the device's settings
    define it (its route, …), else a client skill of that name or of the fingerprint."""
    if name is None:
        return client_skill(toolset)
    found = _device_skill(name, settings)
    if found is not None and found.toolset is not None:  # its records would mix two tool sets
        raise APIError(
            400,
            f"skill {name!r} has its own tools on this device; give your tools another name",
            param=f"metadata.{SKILL_METADATA}",
        )
    if found is not None:
        return found
    config = settings.skills.get(name) if settings else None
    skill = client_skill(toolset, name)
    if config is not None and config.route is not None:
        skill = dataclasses.replace(skill, route=config.route)
    if config is not None and config.teacher_labels_offline is not None:
        skill = dataclasses.replace(skill, teacher_labels_offline=config.teacher_labels_offline)
    return skill


def _device_skill(name: str, settings: Settings | None) -> Skill | None:
    if settings is None:
        return None
    try:
        return get_skill(name, settings)
    except ConfigError:
        return None  # no such skill here (or a [skills.NAME] table with settings only)


def _client_toolset(tools: str) -> Toolset:
    try:
        return _cached_toolset(tools)
    except ToolDefinitionError as exc:
        raise APIError(400, f"cannot use this tool definition: {exc}", param="tools") from None


@functools.lru_cache(maxsize=32)  # clients resend the same tools; their models cost to build
def _cached_toolset(tools: str) -> Toolset:
    return Toolset.from_schemas("client", json.loads(tools))


# --- the turn ----------------------------------------------------------------------------------


def run_client_turn(
    agents: ClientAgents, request: ClientRequest, *, cancel: threading.Event
) -> AgentResult:
    """One turn of the client's tools (in the model thread)."""
    agent = agents.agent(request.tools, request.skill)
    if request.route == "remote" and agent.router is None:  # the agent's ConfigError: a 500
        message = "this server has no remote model to route to; send route 'auto' or 'local'"
        raise APIError(400, message, param="edge_agent.route")
    text, talk = conversation(request, agent.toolset)
    return agent.run(text, conversation=talk, cancel=cancel, route=request.route)


def client_reply(result: AgentResult) -> Reply:
    """The turn as the client sees it: the delegated call as its tool call, else the text."""
    calls = [o.call for o in result.tool_calls if o.status == "delegated"]
    if calls and result.outcome == "answered" and not result.answer:
        return Reply(None, calls[-1:], "tool_calls", result.usage, turn=result)
    return Reply(turn_message(result), usage=result.usage, turn=result)


def conversation(request: ClientRequest, toolset: Toolset) -> tuple[str, Conversation]:
    """The request (the last user message) and what surrounds it, for the agent."""
    messages = request.messages
    last = next((i for i in range(len(messages) - 1, -1, -1) if _said(messages[i])), None)
    if last is None:
        raise APIError(400, "the client's tools need a user message to act on", param="messages")
    instructions = "\n\n".join(m.text() for m in messages if m.role in _SYSTEM_ROLES)
    history = [h for i in range(last) for h in _history(i, messages[i], toolset)]
    prior = _prior(messages, last + 1, toolset)
    talk = Conversation(instructions, history, prior, request.required, request.tool,
                        request.temperature, request.top_p, request.seed)  # fmt: skip
    return messages[last].text(), talk


def _said(message: ChatMessage) -> bool:
    return message.role == "user" and bool(message.text().strip())


def _history(index: int, m: ChatMessage, toolset: Toolset) -> list[Message]:
    """An earlier message as the model writes and reads it (calls and answers as JSON)."""
    if m.role in _SYSTEM_ROLES:
        return []  # in the instructions
    if m.role == "user":
        return [Message(role="user", content=m.text(), name=m.name)]
    if m.role == "tool":
        return [Message(role="tool", content=prompt.tool_result_content(_json_or_text(m.text())))]
    if m.tool_calls:
        calls = [_call(index, c) for c in m.tool_calls]
        return [Message(role="assistant", content=call_text(c, toolset)) for c in calls]
    return [Message(role="assistant", content=prompt.answer_json(m.text()))]


def _prior(messages: Sequence[ChatMessage], start: int, toolset: Toolset) -> list[ToolOutcome]:
    """The calls made since the request, each with the result the client sent for it."""
    after = list(enumerate(messages))[start:]
    results = {m.tool_call_id: m.text() for _, m in after if m.role == "tool" and m.tool_call_id}
    calls = [(i, c) for i, m in after if m.role == "assistant" for c in m.tool_calls or []]
    return [_ran(_call(i, c), results.get(c.id), toolset) for i, c in calls]


def _call(index: int, spec: ToolCallIn) -> ToolCall:
    try:
        arguments = json.loads(spec.function.arguments or "{}")
    except ValueError:
        where = f"messages[{index}].tool_calls"
        message = f"the arguments of {spec.function.name} are not JSON"
        raise APIError(400, message, param=where) from None
    arguments = arguments if isinstance(arguments, dict) else {}
    return ToolCall(id=spec.id, name=spec.function.name, arguments=arguments)


def _ran(call: ToolCall, output: str | None, toolset: Toolset) -> ToolOutcome:
    """A call the client ran, its arguments as the agent would have written them (defaults
    filled in), so a proposal of the same call is seen as the same."""
    effect = Effect.READ_ONLY
    if call.name in toolset:
        tool = toolset.get(call.name)
        try:
            call.arguments = tool.validate(call.arguments)
            effect = tool.effect_of(call.arguments)
        except ToolError:
            pass  # not a call this toolset would make: it stays as the client sent it
    result = _json_or_text(output) if output is not None else None
    return ToolOutcome(call=call, effect=effect, status="delegated", result=result)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
