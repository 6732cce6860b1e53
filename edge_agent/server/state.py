"""What the server's routes share: the backend, the agents, the one model thread, held calls.

Every request runs in one model thread, first come first served: a device holds one model
context. A client that goes away sets its request's cancel event, so queued work is skipped
and generation stops at the next token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from fastapi import Request

from edge_agent.agent import Agent
from edge_agent.backends.base import Backend
from edge_agent.server.chat import check_agent_fits
from edge_agent.server.client_tools import ClientAgents
from edge_agent.server.guard import Rules
from edge_agent.server.schemas import APIError
from edge_agent.types import AgentResult, ToolOutcome

AgentSource = Agent | Callable[[], Agent]  # a factory is called once, on first use
TOOLSET_PREFIX = "edge-agent/"
_POLL_S = 0.1  # how often a waiting request checks that its client is still there
_MAX_PENDING = 256
T = TypeVar("T")


@dataclass(frozen=True)
class ServerOptions:
    model_name: str
    default_max_tokens: int = 512
    confirmation_ttl_s: float = 300.0


class ClientGoneError(Exception):
    """The client closed the connection before its answer was ready."""


@dataclass
class _Pending:
    """A call held for confirmation: the turn it belongs to and the call itself (tool, exact
    arguments, effect). Confirming runs that call and nothing else on the strength of it."""

    model: str
    text: str
    area: str | None
    held: ToolOutcome
    expires: float


class Confirmations:
    """Calls held for the user's confirmation, by id. Touched only on the event loop."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._items: dict[str, _Pending] = {}

    def hold(self, model: str, text: str, area: str | None, turn: AgentResult) -> None:
        self._purge()
        while len(self._items) >= _MAX_PENDING:
            self._items.pop(next(iter(self._items)))  # oldest first: dicts keep order
        expires = time.monotonic() + self.ttl_s
        held = turn.tool_calls[-1]  # the turn stopped at it
        self._items[held.call.id] = _Pending(model, text, area, held, expires)

    def take(self, confirmation_id: str, model: str) -> _Pending:
        self._purge()
        pending = self._items.get(confirmation_id)
        if pending is None or pending.model != model:
            raise APIError(
                400,
                f"no pending confirmation {confirmation_id!r} for {model} (unknown, already "
                f"used, or older than {self.ttl_s:g} s); send the request again",
                param="edge_agent.confirm",
                code="confirmation_not_found",
            )
        return self._items.pop(confirmation_id)

    def _purge(self) -> None:
        now = time.monotonic()
        for key in [k for k, p in self._items.items() if p.expires < now]:
            del self._items[key]


class State:
    """What the routes share: the backend, the local and client agents, the model thread,
    the options."""

    def __init__(
        self,
        backend: Backend,
        agents: Mapping[str, AgentSource],
        options: ServerOptions,
        rules: Rules,
        client_agents: ClientAgents,
    ) -> None:
        self.backend = backend
        self.options = options
        self.rules = rules
        self.client_agents = client_agents
        self.created = int(time.time())
        self.confirmations = Confirmations(options.confirmation_ttl_s)
        self._sources = {f"{TOOLSET_PREFIX}{name}": src for name, src in agents.items()}
        self._agents: dict[str, Agent] = {}
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="edge-agent-model")

    def model_ids(self) -> list[str]:
        return [self.options.model_name, *self._sources]

    def is_local(self, model: str) -> bool:
        return model in self._sources

    def agent(self, model: str) -> Agent:
        """The local agent for a model id, built on first use (in the model thread)."""
        if model not in self._agents:
            source = self._sources[model]
            agent = source if isinstance(source, Agent) else source()
            check_agent_fits(self.backend, agent)
            self._agents[model] = agent
        return self._agents[model]

    async def run(
        self, request: Request, fn: Callable[..., T], *args: Any, cancel: threading.Event
    ) -> T:
        """``fn(*args, cancel=cancel)`` in the model thread, behind whatever is queued."""
        future = self._model_thread.submit(fn, *args, cancel=cancel)
        return await until_gone(request, asyncio.wrap_future(future), cancel)

    def start(self, fn: Callable[..., None], *args: Any) -> None:
        self._model_thread.submit(fn, *args)

    def close(self) -> None:
        self._model_thread.shutdown(wait=False, cancel_futures=True)


async def until_gone(request: Request, work: Awaitable[T], cancel: threading.Event) -> T:
    """The result of `work`, unless the client disconnects first: then cancel and raise."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=_POLL_S)
        if done:
            return task.result()
        if await request.is_disconnected():
            cancel.set()
            task.cancel()
            raise ClientGoneError("the client closed the connection")


def state_of(request: Request) -> State:
    return cast(State, request.app.state.edge)


def require_model(state: State, model: str) -> None:
    if model not in state.model_ids():
        known = ", ".join(state.model_ids())
        raise APIError(
            404,
            f"the model {model!r} does not exist; this server has: {known}",
            param="model",
            code="model_not_found",
        )


def require_unicode(data: Any) -> None:
    """Python's JSON parser takes an escaped lone surrogate ("\\udc80"), which is no Unicode
    text: a tokenizer, the log and even an error message quoting it fail to encode it. Walked
    without recursion: the body may nest as deep as the parser allowed."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and not _is_unicode(item):
            message = "the request body is not valid JSON: a string has a lone surrogate escape"
            raise APIError(400, message)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
