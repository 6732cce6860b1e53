"""One MCP client connection on a thread of its own, callable from any thread.

The SDK's client is asynchronous; the agent is not, and runs each tool handler in a worker
thread. So the connection lives in one long task on a background thread's event loop (anyio's
task groups and cancel scopes must be entered and left by the same task), and callers submit
requests to that loop and wait with a timeout.

A connection does not come back once its transport has ended (a stdio server exited, an HTTP
transport failed); `Session` replaces it. The transport's read stream is watched, so a request
submitted after its end is known never to have left (`NotSent`) and may go out on the next
connection; one that was on its way when the connection died may have run and never does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TextIO

import anyio
import httpx2
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client._transport import ReadStream, Transport, TransportStreams
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from edge_agent.errors import ToolError, ToolExecutionError, ToolTimeoutError

GRACE_S = 5.0  # past the MCP timeout, before a waiting caller gives up on its own

# Enters what the transport needs on the stack (an HTTP client) and returns the transport;
# gets where a stdio server's stderr goes.
Opener = Callable[[AsyncExitStack, TextIO | None], Transport]
Request = Callable[[Client, float], Coroutine[Any, Any, Any]]  # (client, seconds left)


class NotSent(Exception):
    """The request never reached the server: the connection had ended before it was sent, or
    the server did not know the session (HTTP 404 after a restart) and so ran nothing."""


class Connection:
    """One MCP client connection. ``name`` names the server in errors."""

    def __init__(self, name: str, opener: Opener, errlog: TextIO | None) -> None:
        self.name = name
        self.description = ""  # the server's instructions or title, once connected
        self.ended: BaseException | None = None  # why the session task ended, once it has
        self._opener, self._errlog = opener, errlog
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._closed = False
        self._transport_over = False  # the read stream ended: nothing more goes out
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"mcp-{name}", daemon=True)

    def start(self, wait_s: float) -> None:
        """Connect within `wait_s`; the SDK's error, or TimeoutError (stopped then)."""
        self._thread.start()
        try:
            self._ready.result(wait_s)
        except BaseException:
            self.close()
            raise

    @property
    def alive(self) -> bool:
        """Connected, and neither closed nor cut off: a request would go out."""
        ready = self._ready.done() and self._ready.exception() is None
        return ready and not (self._closed or self._transport_over or self.ended)

    def submit(self, request: Request, doing: str, deadline: float, timeout_s: float) -> Any:
        """Run `request` on the connection's loop; NotSent, or a ToolError by then."""
        client, loop = self._client, self._loop
        if not self.alive or client is None or loop is None:
            raise NotSent
        coroutine = self._guarded(request, client, deadline)
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # the loop has ended
            coroutine.close()
            raise NotSent from None
        try:  # the SDK's own timeout comes first
            return future.result(max(deadline - time.monotonic(), 0.0) + GRACE_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise self._timeout(doing, timeout_s) from None
        except MCPError as exc:
            raise self._mcp_error(doing, timeout_s, exc) from exc
        except (ToolError, NotSent):
            raise
        except Exception as exc:
            why = reason(exc)
            raise ToolExecutionError(f"MCP server {self.name!r} could not {doing}: {why}") from exc

    def close(self) -> None:
        """End the connection (a stdio server: its stdin closed, then terminated). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._signal_stop()
        if self._thread.ident is not None:
            self._thread.join(15.0)  # the SDK bounds its shutdown (about 4.5 s for stdio)

    # -- on the connection's loop ------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        self._stop = asyncio.Event()
        try:
            async with AsyncExitStack() as stack:
                transport = self._opener(stack, self._errlog)
                client = Client(_watched(transport, self._cut_off))
                client = await stack.enter_async_context(client)
                self._client, self.description = client, _description(client)
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:  # anyio raises groups; `reason` finds the first cause
            self.ended = exc
            if not self._ready.done():
                self._ready.set_exception(exc if isinstance(exc, Exception) else _Ended(exc))
        finally:
            self._client = None
            self.ended = self.ended or _Ended("closed")

    def _cut_off(self) -> None:
        self._transport_over = True

    async def _guarded(self, request: Request, client: Client, deadline: float) -> Any:
        """The request, unless the transport ended before it could go out (checked on the loop,
        where the end is observed, so no send slips in between)."""
        if self._transport_over or self._closed:
            raise NotSent
        return await request(client, max(deadline - time.monotonic(), 0.001))

    def _signal_stop(self) -> None:
        """A connected session leaves its `async with` on its own; one still connecting is
        cancelled."""
        loop, stop, task = self._loop, self._stop, self._task
        if loop is None:
            return
        connected = self._ready.done() and self._ready.exception() is None
        signal = stop.set if connected and stop else task.cancel if task else None
        if signal is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended meanwhile
                loop.call_soon_threadsafe(signal)

    # -- errors ------------------------------------------------------------------------------

    def _mcp_error(self, doing: str, timeout_s: float, exc: MCPError) -> Exception:
        if exc.code == REQUEST_TIMEOUT:
            return self._timeout(doing, timeout_s)
        if _unknown_session(exc):
            self._transport_over = True  # the server restarted and forgot this session
            self.ended = self.ended or _Ended("the server no longer knows the session")
            return NotSent()
        if exc.code == CONNECTION_CLOSED:
            why = f" ({reason(self.ended)})" if self.ended and not self._closed else ""
            return ToolExecutionError(
                f"MCP server {self.name!r} closed the connection{why}: cannot {doing}; the "
                "call may have run, so it is not repeated (the next call reconnects)"
            )
        return ToolExecutionError(f"MCP server {self.name!r} could not {doing}: {reason(exc)}")

    def _timeout(self, doing: str, timeout_s: float) -> ToolTimeoutError:
        message = f"MCP server {self.name!r} did not {doing} within {timeout_s:g} s"
        return ToolTimeoutError(message)


def _unknown_session(exc: MCPError) -> bool:
    """An HTTP server's 404 for a session id it does not know (it restarted): the request was
    refused before anything ran. The SDK's client says "Session terminated" for a bare 404;
    servers word their JSON-RPC error body (the SDK's: "Session not found")."""
    text = exc.message.lower()
    return "session" in text and ("not found" in text or "terminated" in text)


class _Ended(Exception):
    """The session was cancelled or interrupted before it connected, or closed."""


class _EndAware:
    """A transport's read stream that reports its end: past it, no request goes out."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], on_end: Callable[[], None]):
        self._inner, self._on_end = inner, on_end

    @property
    def last_context(self) -> Any:  # the SDK reads the sender's contextvars when there are any
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    def __aiter__(self) -> _EndAware:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._on_end()
        await self._inner.aclose()

    async def __aenter__(self) -> _EndAware:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


@asynccontextmanager
async def _watched(transport: Transport, on_end: Callable[[], None]) -> AsyncIterator[Any]:
    async with transport as (read, write):
        streams: TransportStreams = (_EndAware(read, on_end), write)
        yield streams


def stdio_opener(command: list[str], env: Mapping[str, str]) -> Opener:
    """A server started as a subprocess: `env` over the SDK's minimal environment."""
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(env))

    def open_(_: AsyncExitStack, errlog: TextIO | None) -> Transport:
        assert errlog is not None
        return stdio_client(params, errlog=errlog)

    return open_


def http_opener(url: str, headers: Mapping[str, str], timeout_s: float) -> Opener:
    """A server over streamable HTTP, every request with `headers`."""

    def open_(stack: AsyncExitStack, _: TextIO | None) -> Transport:
        timeout = httpx2.Timeout(timeout_s, read=max(timeout_s, 300.0))  # SSE streams idle
        http = create_mcp_http_client(headers=dict(headers), timeout=timeout)
        stack.push_async_exit(http)  # closed after the client that uses it
        return streamable_http_client(url, http_client=http)

    return open_


def _description(client: Client) -> str:
    text = client.instructions or ""
    if not text and client.server_info:
        text = client.server_info.title or client.server_info.description or ""
    return " ".join(text.split())[:200]


def reason(exc: BaseException) -> str:
    """The first cause of an error, on one line (anyio wraps errors in exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, _Ended) and exc.args:
        return reason(exc.args[0]) if isinstance(exc.args[0], BaseException) else str(exc.args[0])
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        return "the server closed the connection"
    text = str(exc.message if isinstance(exc, MCPError) else exc) or type(exc).__name__
    return " ".join(text.split())
