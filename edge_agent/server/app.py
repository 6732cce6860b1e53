"""`edge-agent serve`: an OpenAI-compatible HTTP server over one model and the local toolsets.

    POST /v1/chat/completions ─► which model?
        the base model         plain chat, or the client's `tools` → constrained `tool_calls`
        edge-agent/<toolset>   the local agent loop runs the calls; the answer comes back with
                               the executed calls in the `edge_agent` extension; a call that
                               needs confirmation returns an id: a follow-up request with
                               it runs exactly that call, and any other asks again
    GET  /v1/models            the base model and one model per local toolset

Every request runs in one model thread, first come first served: a device holds one model
context. A client that goes away sets its request's cancel event, so queued work is skipped
and generation stops at the next token. Bound to 127.0.0.1 by default; `serve` refuses any
other address without an API key. Every request first passes the guard (`guard`): a Host
this server answers to, no foreign browser Origin, the API key, a bounded body.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from edge_agent.agent import Agent, RouteOverride
from edge_agent.backends.base import Backend
from edge_agent.errors import ConfigError, ContextLengthError, EdgeAgentError, ToolError
from edge_agent.server.chat import (
    Chat,
    Reply,
    check_agent_fits,
    complete_chat,
    last_user_text,
    prepare_chat,
    run_turn,
    stream_chat,
)
from edge_agent.server.guard import DEFAULT_MAX_BODY_BYTES, Guard, Rules
from edge_agent.server.responses import ChunkWriter, completion, reply_events, sse
from edge_agent.server.schemas import (
    APIError,
    ChatCompletion,
    ChatCompletionRequest,
    ErrorBody,
    ModelCard,
    ModelList,
)
from edge_agent.types import AgentResult, ToolCall, ToolOutcome

__all__ = ["AgentSource", "create_app", "serve", "serve_in_thread"]

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


# --- shared state ------------------------------------------------------------------------------


@dataclass
class _Pending:
    """A call held for confirmation: the turn it belongs to and the call itself (tool, exact
    arguments, effect). Confirming runs that call and nothing else on the strength of it."""

    model: str
    text: str
    area: str | None
    held: ToolOutcome
    expires: float


class _Confirmations:
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


class _State:
    """What the routes share: the backend, the local agents, the model thread, the options."""

    def __init__(
        self,
        backend: Backend,
        agents: Mapping[str, AgentSource],
        options: ServerOptions,
        rules: Rules,
    ) -> None:
        self.backend = backend
        self.options = options
        self.rules = rules
        self.created = int(time.time())
        self.confirmations = _Confirmations(options.confirmation_ttl_s)
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


def _state(request: Request) -> _State:
    return cast(_State, request.app.state.edge)


# --- app ---------------------------------------------------------------------------------------


def create_app(
    backend: Backend,
    *,
    toolsets: Mapping[str, AgentSource] | None = None,
    model_name: str | None = None,
    api_key: str | None = None,
    default_max_tokens: int = 512,
    confirmation_ttl_s: float = 300.0,
    allowed_hosts: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The server app. ``toolsets`` maps a toolset name to its Agent (or a factory building
    it on first use), served as model ``edge-agent/<name>``; the agents should share
    ``backend``. ``model_name`` is the base model's id (default: the backend's name).
    ``api_key`` (None: none asked), ``allowed_hosts`` (besides localhost, 127.0.0.1, [::1]),
    ``allowed_origins`` (browser pages, with CORS; none by default) and ``max_body_bytes``
    are what the guard enforces."""
    options = ServerOptions(
        model_name=model_name or backend.model_name,
        default_max_tokens=default_max_tokens,
        confirmation_ttl_s=confirmation_ttl_s,
    )
    hosts, origins = frozenset(allowed_hosts), frozenset(allowed_origins)
    state = _State(backend, toolsets or {}, options, Rules(api_key, hosts, origins, max_body_bytes))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(title="edge-agent", lifespan=lifespan)
    app.state.edge = state
    _add_middleware(app, state.rules)
    _add_error_handlers(app)
    _add_routes(app)
    return app


def _add_middleware(app: FastAPI, rules: Rules) -> None:
    if rules.origins:  # the guard has refused any other origin before CORS sees it
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(rules.origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-edge-agent-confirm"],
        )
    app.add_middleware(Guard, rules=rules)  # added last: the outermost


# Documented so clients (and the API fuzz tests) know every refusal's shape: the guard answers
# 401/403/413 on any route, the app 400/404, all in OpenAI's error body ("4XX" also stands in
# for FastAPI's 422, which this server never sends).
_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "refused, in OpenAI's error shape"}
}
_EVENT = {  # one server-sent event (OpenAPI 3.1: a text/event-stream schema is per event)
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "description": "a chat.completion.chunk, an error, [DONE]"}
    },
}
_CHAT: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletion,
        "description": "the completion; with stream=true, server-sent events",
        "content": {"text/event-stream": {"schema": _EVENT}},
    },
    **_ERRORS,
}


def _add_routes(app: FastAPI) -> None:
    app.get("/v1/models", responses=_ERRORS)(list_models)
    app.get("/v1/models/{model_id:path}", responses=_ERRORS)(get_model)
    app.post("/v1/chat/completions", response_model=None, responses=_CHAT)(chat_completions)


async def list_models(request: Request) -> ModelList:
    state = _state(request)
    return ModelList(data=[ModelCard(id=m, created=state.created) for m in state.model_ids()])


async def get_model(model_id: str, request: Request) -> ModelCard:
    state = _state(request)
    _require_model(state, model_id)
    return ModelCard(id=model_id, created=state.created)


async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    state = _state(request)
    _require_unicode(await request.json())  # parsed already: Starlette keeps it
    _require_model(state, body.model)
    if state.is_local(body.model):
        reply = await _local_turn(state, body, request)
        return _respond(body, reply)
    chat = prepare_chat(body, default_max_tokens=state.options.default_max_tokens)
    if body.stream and chat.toolset is None:
        return await _stream_tokens(state, body, chat, request)
    reply = await state.run(request, complete_chat, state.backend, chat, cancel=threading.Event())
    return _respond(body, reply)


def _require_unicode(data: Any) -> None:
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


def _require_model(state: _State, model: str) -> None:
    if model not in state.model_ids():
        known = ", ".join(state.model_ids())
        raise APIError(
            404,
            f"the model {model!r} does not exist; this server has: {known}",
            param="model",
            code="model_not_found",
        )


def _respond(body: ChatCompletionRequest, reply: Reply) -> Response:
    if body.stream:
        events = reply_events(ChunkWriter(body.model), reply, include_usage=body.include_usage)
        return sse(_iterate(events))
    payload = completion(body.model, reply).model_dump_json(exclude_none=False)
    return Response(payload, media_type="application/json")


async def _iterate(events: list[str]) -> AsyncIterator[str]:
    for event in events:
        yield event


# --- local toolsets ----------------------------------------------------------------------------


async def _local_turn(state: _State, body: ChatCompletionRequest, request: Request) -> Reply:
    if body.tools:
        raise APIError(
            400,
            f"{body.model} runs its own tools; send client tools to {state.options.model_name}",
            param="tools",
        )
    options = body.edge_agent
    confirm = request.headers.get("x-edge-agent-confirm") or (options.confirm if options else None)
    approved: ToolCall | None = None
    if confirm:  # exactly the held call runs; any other call in the turn asks again
        pending = state.confirmations.take(confirm, body.model)
        text, area, approved = pending.text, pending.area, pending.held.call
    else:
        area = options.area if options else None
        text = last_user_text(body.messages)
    routed = functools.partial(_turn, route=options.route if options else "auto")
    reply = await state.run(
        request, routed, state, body.model, text, area, approved, cancel=threading.Event()
    )
    turn = reply.turn
    if turn is not None and turn.outcome == "needs_confirmation" and turn.tool_calls:
        state.confirmations.hold(body.model, text, area, turn)
    return reply


def _turn(
    state: _State,
    model: str,
    text: str,
    area: str | None,
    approved: ToolCall | None,
    *,
    cancel: threading.Event,
    route: RouteOverride = "auto",
) -> Reply:
    agent = state.agent(model)
    if route == "remote" and agent.router is None:  # the agent's ConfigError would be a 500
        message = f"{model} has no remote model to route to; send route 'auto' or 'local'"
        raise APIError(400, message, param="edge_agent.route")
    return run_turn(agent, text, area=area, approved=approved, cancel=cancel, route=route)


# --- token streaming ---------------------------------------------------------------------------

_END = object()


async def _stream_tokens(
    state: _State, body: ChatCompletionRequest, chat: Chat, request: Request
) -> Response:
    """Real token streaming. The first chunk is awaited before the response starts, so a
    request that fails early (too long, backend error) still gets its HTTP error status."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()

    def produce() -> None:
        try:
            for chunk in stream_chat(state.backend, chat, cancel):
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
        except Exception as exc:  # handed to the event loop, which reports it
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    state.start(produce)
    first = await until_gone(request, queue.get(), cancel)
    if isinstance(first, Exception):
        raise first
    writer = ChunkWriter(body.model)
    return sse(_token_events(writer, first, queue, cancel, include_usage=body.include_usage))


async def _token_events(
    writer: ChunkWriter,
    first: Any,
    queue: asyncio.Queue[Any],
    cancel: threading.Event,
    *,
    include_usage: bool,
) -> AsyncIterator[str]:
    try:
        yield writer.role()
        item = first
        while item is not _END:
            if isinstance(item, Exception):
                yield writer.error(item)
                break
            for event in writer.token(item, include_usage=include_usage):
                yield event
            item = await queue.get()
        yield writer.done()
    finally:
        cancel.set()  # the client went away, or we are done: either way, stop generating


# --- errors ------------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    app.exception_handler(APIError)(_api_error)
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.exception_handler(HTTPException)(_http_error)
    app.exception_handler(EdgeAgentError)(_library_error)
    app.exception_handler(ClientGoneError)(_client_gone)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    err = cast(APIError, exc)
    return JSONResponse(err.body.model_dump(), status_code=err.status)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    errors = cast(RequestValidationError, exc).errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx")
        reason = ctx.get("error", "") if isinstance(ctx, dict) else ""
        message, param = f"the request body is not valid JSON: {reason}".rstrip(": "), None
    else:
        param = ".".join(loc) or None
        message = f"{param}: {first['msg']}" if param else f"request body: {first['msg']}"
    return await _api_error(request, APIError(400, message, param=param))


_HTTP_CODES = {404: "not_found", 413: "request_too_large"}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    err = cast(HTTPException, exc)
    code = _HTTP_CODES.get(err.status_code)
    response = await _api_error(request, APIError(err.status_code, str(err.detail), code=code))
    response.headers.update(err.headers or {})
    return response


async def _library_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ContextLengthError):
        err = APIError(400, str(exc), param="messages", code="context_length_exceeded")
    elif isinstance(exc, ToolError):
        err = APIError(400, str(exc))
    else:
        err = APIError(500, str(exc), type="server_error")
    return await _api_error(request, err)


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    # Nobody reads this; 499 is what proxies log for a client that closed the request.
    return await _api_error(request, APIError(499, str(exc), code="client_closed_request"))


# --- running it --------------------------------------------------------------------------------


def serve(
    app: FastAPI,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    api_key: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve until interrupted. ConfigError when bound beyond loopback without an API key."""
    _server(app, host, port, api_key, log_level).run()


@contextmanager
def serve_in_thread(
    app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None
) -> Iterator[str]:
    """Serve from a background thread (tests, benchmarks, a daemon embedding the server);
    yields the base URL, e.g. ``http://127.0.0.1:PORT/v1``. Port 0 takes a free one."""
    server = _server(app, host, port, api_key, "warning")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and Nagle
    # plus delayed ACKs would add ~40 ms to every response.
    with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            _wait_started(server, thread)
            bound = host if family == socket.AF_INET else f"[{host}]"
            yield f"http://{bound}:{sock.getsockname()[1]}/v1"
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError("the server did not start; see the log above for why")
        time.sleep(0.01)


def _server(
    app: FastAPI, host: str, port: int, api_key: str | None, log_level: str
) -> uvicorn.Server:
    state = cast(_State, app.state.edge)
    if api_key:
        state.rules.api_key = api_key
    if not _is_loopback(host) and not state.rules.api_key:
        raise ConfigError(
            f"refusing to serve on {host} without an API key: anyone who can reach it could "
            "act on this device; set an API key, or bind to 127.0.0.1"
        )
    state.rules.bound_to(host)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5
    )
    return uvicorn.Server(config)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
