"""`edge-agent serve`: an OpenAI-compatible HTTP server over one model and the local toolsets.

    POST /v1/chat/completions ─► which model?
        the base model         plain chat; with the client's `tools`, an agent turn over
                               them (`client_tools`): the call comes back as `tool_calls`
                               for the client to run, through the router and into the log
        edge-agent/<toolset>   the local agent loop runs the calls; the answer comes back with
                               the executed calls in the `edge_agent` extension; a call that
                               needs confirmation returns an id: a follow-up request with
                               it runs exactly that call, and any other asks again
    POST /v1/responses         the Responses API over the same paths (`responses_api`)
    GET  /v1/models            the base model and one model per local toolset

Every request runs in one model thread, first come first served (`state`). Bound to
127.0.0.1 by default; `serve` refuses any other address without an API key. Every request
first passes the guard (`guard`): a Host this server answers to, no foreign browser Origin,
the API key, a bounded body.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, cast

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from edge_agent.agent import RouteOverride
from edge_agent.backends.base import Backend
from edge_agent.errors import (
    ConfigError,
    ContextLengthError,
    EdgeAgentError,
    ToolError,
    TurnTimeoutError,
)
from edge_agent.server.chat import (
    Chat,
    Reply,
    complete_chat,
    last_user_text,
    prepare_chat,
    run_turn,
)
from edge_agent.server.client_tools import (
    SKILL_HEADER,
    ClientAgents,
    client_reply,
    client_request,
    plain_agents,
    run_client_turn,
)
from edge_agent.server.guard import DEFAULT_MAX_BODY_BYTES, Guard, Rules
from edge_agent.server.responses import (
    ChunkWriter,
    completion,
    iterate,
    reply_events,
    sse,
    token_events,
)
from edge_agent.server.responses_api import ResponseEvents, as_chat, response_of
from edge_agent.server.schemas import (
    APIError,
    ChatCompletion,
    ChatCompletionRequest,
    ErrorBody,
    ModelCard,
    ModelList,
    ResponseObject,
    ResponsesRequest,
)
from edge_agent.server.state import (
    AgentSource,
    ClientGoneError,
    ServerOptions,
    State,
    require_model,
    require_unicode,
    state_of,
)
from edge_agent.server.streaming import open_stream
from edge_agent.types import ToolCall

__all__ = ["AgentSource", "create_app", "serve", "serve_in_thread"]


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
    client_agents: ClientAgents | None = None,
) -> FastAPI:
    """The server app. ``toolsets`` maps a toolset name to its Agent (or a factory building
    it on first use), served as model ``edge-agent/<name>``; the agents should share
    ``backend``. ``client_agents`` makes the agents of clients' own tools (default: on
    ``backend``, without log or router). ``model_name`` is the base model's id (default:
    the backend's name).
    ``api_key`` (None: none asked), ``allowed_hosts`` (besides localhost, 127.0.0.1, [::1]),
    ``allowed_origins`` (browser pages, with CORS; none by default) and ``max_body_bytes``
    are what the guard enforces."""
    options = ServerOptions(
        model_name=model_name or backend.model_name,
        default_max_tokens=default_max_tokens,
        confirmation_ttl_s=confirmation_ttl_s,
    )
    hosts, origins = frozenset(allowed_hosts), frozenset(allowed_origins)
    rules = Rules(api_key, hosts, origins, max_body_bytes)
    clients = client_agents or plain_agents(backend)
    state = State(backend, toolsets or {}, options, rules, clients)

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
            allow_headers=["authorization", "content-type", "x-edge-agent-confirm", SKILL_HEADER],
        )
    app.add_middleware(Guard, rules=rules)  # added last: the outermost


# Documented so clients (and the API fuzz tests) know every refusal's shape: the guard answers
# 401/403/413 on any route, the app 400/404, all in OpenAI's error body ("4XX" also stands in
# for FastAPI's 422, which this server never sends).
_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "refused, in OpenAI's error shape"}
}
_TIMEOUT: dict[int | str, dict[str, Any]] = {  # an agent turn past turn_deadline_s (logged)
    504: {"model": ErrorBody, "description": "the agent's turn ran past its deadline"}
}
_EVENT = {  # one server-sent event (OpenAPI 3.1: a text/event-stream schema is per event)
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "description": "a chat.completion.chunk, an error, [DONE]"}
    },
}
_RESPONSE_EVENT = {  # event: response.created, …; data: that event as JSON
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "description": "a response stream event, or an error"},
    },
}
_CHAT: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletion,
        "description": "the completion; with stream=true, server-sent events",
        "content": {"text/event-stream": {"schema": _EVENT}},
    },
    **_ERRORS,
    **_TIMEOUT,
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ResponseObject,
        "description": "the response; with stream=true, server-sent events",
        "content": {"text/event-stream": {"schema": _RESPONSE_EVENT}},
    },
    **_ERRORS,
    **_TIMEOUT,
}


def _add_routes(app: FastAPI) -> None:
    app.get("/v1/models", responses=_ERRORS)(list_models)
    app.get("/v1/models/{model_id:path}", responses=_ERRORS)(get_model)
    app.post("/v1/chat/completions", response_model=None, responses=_CHAT)(chat_completions)
    app.post("/v1/responses", response_model=None, responses=_RESPONSES)(responses)


async def list_models(request: Request) -> ModelList:
    state = state_of(request)
    return ModelList(data=[ModelCard(id=m, created=state.created) for m in state.model_ids()])


async def get_model(model_id: str, request: Request) -> ModelCard:
    state = state_of(request)
    require_model(state, model_id)
    return ModelCard(id=model_id, created=state.created)


async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    state = state_of(request)
    require_unicode(await request.json())  # parsed already: Starlette keeps it
    require_model(state, body.model)
    if state.is_local(body.model):
        reply = await _local_turn(state, body, request)
        return _respond(body, reply)
    if body.tools and body.tool_choice != "none":
        return _respond(body, await _client_turn(state, body, request))
    chat = prepare_chat(body, default_max_tokens=state.options.default_max_tokens)
    if body.stream:
        stream = await open_stream(state, chat, request)
        writer = ChunkWriter(body.model)
        return sse(token_events(writer, stream, include_usage=body.include_usage))
    return _respond(body, await _complete(state, chat, request))


async def responses(body: ResponsesRequest, request: Request) -> Response:
    state = state_of(request)
    require_unicode(await request.json())
    require_model(state, body.model)
    if state.is_local(body.model):
        message = f"{body.model} speaks Chat Completions; send it to /v1/chat/completions"
        raise APIError(400, message, param="model")
    chat = as_chat(body)
    if chat.tools and chat.tool_choice != "none":
        reply = await _client_turn(state, chat, request)
    else:
        plain = prepare_chat(chat, default_max_tokens=state.options.default_max_tokens)
        if body.stream:
            return sse(ResponseEvents(body).tokens(await open_stream(state, plain, request)))
        reply = await _complete(state, plain, request)
    if body.stream:
        return sse(iterate(ResponseEvents(body).reply(reply)))
    payload = response_of(body, reply).model_dump_json()
    return Response(payload, media_type="application/json")


async def _complete(state: State, chat: Chat, request: Request) -> Reply:
    return await state.run(request, complete_chat, state.backend, chat, cancel=threading.Event())


async def _client_turn(state: State, body: ChatCompletionRequest, request: Request) -> Reply:
    """The client's tools: a turn of its skill's agent, decided before anything streams."""
    client = client_request(body, request.headers.get(SKILL_HEADER))
    turn = await state.run(
        request, run_client_turn, state.client_agents, client, cancel=threading.Event()
    )
    return client_reply(turn)


def _respond(body: ChatCompletionRequest, reply: Reply) -> Response:
    if body.stream:
        events = reply_events(ChunkWriter(body.model), reply, include_usage=body.include_usage)
        return sse(iterate(events))
    payload = completion(body.model, reply).model_dump_json(exclude_none=False)
    return Response(payload, media_type="application/json")


# --- local toolsets ----------------------------------------------------------------------------


async def _local_turn(state: State, body: ChatCompletionRequest, request: Request) -> Reply:
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
    state: State,
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
    elif isinstance(exc, TurnTimeoutError):  # logged; calls that ran stay done
        err = APIError(504, str(exc), type="server_error", code="turn_timeout")
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
    state = cast(State, app.state.edge)
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
