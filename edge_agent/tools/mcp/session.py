"""One MCP client session on a thread of its own, callable from any thread.

The SDK's client is asynchronous; the agent is not, and runs each tool handler in a worker
thread. So the session lives in one long task on a background thread's event loop (anyio's
task groups and cancel scopes must be entered and left by the same task), and callers submit
requests to that loop and wait with a timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import IO, Any, TextIO

import httpx2
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, CallToolResult, ListToolsResult
from mcp_types import Tool as ToolInfo

from edge_agent.errors import ConfigError, ToolError, ToolExecutionError, ToolTimeoutError

log = logging.getLogger("edge_agent.tools.mcp")  # one logger for the package
MAX_PAGES = 100  # a server whose cursors never end cannot hang the connect
_STDERR_LINES = 20  # of a stdio server's stderr, kept for error messages
_GRACE_S = 5.0  # past the MCP timeout, before a waiting caller gives up on its own

# Enters what the client needs on the stack (an HTTP client) and returns the Client to enter;
# gets where a stdio server's stderr goes.
Opener = Callable[[AsyncExitStack, TextIO | None], AbstractAsyncContextManager[Client]]


class Session:
    """An MCP client session. ``where`` (the command or URL) names the server in errors."""

    def __init__(
        self, name: str, where: str, opener: Opener, timeout_s: float, *, stdio: bool
    ) -> None:
        self.name, self.where, self.timeout_s = name, where, timeout_s
        self.description = ""  # the server's instructions or title, once connected
        self._opener = opener
        self._stderr = _StderrTail(name) if stdio else None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._closed = False
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"mcp-{name}", daemon=True)

    def start(self) -> None:
        """Connect; ConfigError when the server cannot be started or reached, or does not
        answer within the timeout (it is stopped then)."""
        self._thread.start()
        try:
            self._ready.result(self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise self._unreachable(f"it did not answer within {self.timeout_s:g} s") from None
        except Exception as exc:
            raise self._unreachable(reason(exc)) from exc

    def list_tools(self) -> list[ToolInfo]:
        """Every tool the server lists, page after page."""
        tools: list[ToolInfo] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = self._submit(_page_at(cursor), "list its tools")
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                return tools
        raise ConfigError(f"MCP server {self.name!r} lists tools past {MAX_PAGES} pages")

    def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        result: CallToolResult = self._submit(
            lambda c: c.call_tool(tool, arguments, read_timeout_seconds=self.timeout_s),
            f"run {tool}",
        )
        return result

    def close(self) -> None:
        """End the session (a stdio server: its stdin closed, then terminated). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._signal_stop()
        if self._thread.ident is not None:
            self._thread.join(self.timeout_s + _GRACE_S)
        if self._stderr:
            self._stderr.close()

    # -- on the session's loop --------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        self._stop = asyncio.Event()
        try:
            async with AsyncExitStack() as stack:
                errlog = self._stderr.writer if self._stderr else None
                client = await stack.enter_async_context(self._opener(stack, errlog))
                self._client, self.description = client, _description(client)
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:  # anyio raises groups; `reason` finds the first cause
            if not self._ready.done():
                self._ready.set_exception(exc if isinstance(exc, Exception) else _Ended(exc))
            elif not self._closed:
                log.warning("MCP server %r: the session ended: %s", self.name, reason(exc))
        finally:
            self._client = None

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

    # -- on the callers' threads ------------------------------------------------------------

    def _submit(self, request: Callable[[Client], Coroutine[Any, Any, Any]], doing: str) -> Any:
        client, loop = self._client, self._loop
        if self._closed or client is None or loop is None:
            raise ToolExecutionError(f"MCP server {self.name!r} is not connected (closed or ended)")
        coroutine = request(client)
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # the loop has ended
            coroutine.close()
            raise ToolExecutionError(f"MCP server {self.name!r} is not connected") from None
        try:
            return future.result(self.timeout_s + _GRACE_S)  # the SDK's own timeout comes first
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise self._timeout(doing) from None
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise self._timeout(doing) from None
            raise self._failed(doing, exc) from exc
        except ToolError:
            raise
        except Exception as exc:
            raise self._failed(doing, exc) from exc

    def _timeout(self, doing: str) -> ToolTimeoutError:
        message = f"MCP server {self.name!r} did not {doing} within {self.timeout_s:g} s"
        return ToolTimeoutError(message)

    def _failed(self, doing: str, exc: BaseException) -> ToolExecutionError:
        if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
            return ToolExecutionError(
                f"MCP server {self.name!r} closed the connection: cannot {doing}{self._tail()}"
            )
        return ToolExecutionError(f"MCP server {self.name!r} could not {doing}: {reason(exc)}")

    def _unreachable(self, why: str) -> ConfigError:
        self.close()  # the server's stderr is complete once it is gone
        return ConfigError(
            f"cannot connect to MCP server {self.name!r} ({self.where}): {why}{self._tail()}"
        )

    def _tail(self) -> str:
        last = self._stderr.last() if self._stderr else ""
        return f"; its stderr ends: {last}" if last else ""


def _page_at(cursor: str | None) -> Callable[[Client], Coroutine[Any, Any, ListToolsResult]]:
    return lambda client: client.list_tools(cursor=cursor)


class _Ended(Exception):
    """The session was cancelled or interrupted before it connected."""


def stdio_opener(command: list[str], env: Mapping[str, str], timeout_s: float) -> Opener:
    """A server started as a subprocess: `env` over the SDK's minimal environment."""
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(env))

    def open_(_: AsyncExitStack, errlog: TextIO | None) -> Client:
        assert errlog is not None
        return Client(stdio_client(params, errlog=errlog), read_timeout_seconds=timeout_s)

    return open_


def http_opener(url: str, headers: Mapping[str, str], timeout_s: float) -> Opener:
    """A server over streamable HTTP, every request with `headers`."""

    def open_(stack: AsyncExitStack, _: TextIO | None) -> Client:
        timeout = httpx2.Timeout(timeout_s, read=max(timeout_s, 300.0))  # SSE streams idle
        http = create_mcp_http_client(headers=dict(headers), timeout=timeout)
        stack.push_async_exit(http)  # closed after the client that uses it
        return Client(streamable_http_client(url, http_client=http), read_timeout_seconds=timeout_s)

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
        return reason(exc.args[0])
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        return "the server closed the connection"
    text = str(exc.message if isinstance(exc, MCPError) else exc) or type(exc).__name__
    return " ".join(text.split())


class _StderrTail:
    """A stdio server's stderr: each line to the debug log, the last few kept, so an error
    can say why the server died (a traceback's last line, a missing key)."""

    def __init__(self, name: str) -> None:
        read_fd, write_fd = os.pipe()
        self.writer: TextIO = os.fdopen(write_fd, "w")
        self._lines: deque[str] = deque(maxlen=_STDERR_LINES)
        reader = os.fdopen(read_fd, "r", errors="replace")
        self._pump = threading.Thread(
            target=self._read, args=(name, reader), name=f"mcp-{name}-stderr", daemon=True
        )
        self._pump.start()

    def _read(self, name: str, reader: IO[str]) -> None:
        with reader:
            for line in reader:
                if line.strip():
                    self._lines.append(line.strip())
                    log.debug("MCP server %r: %s", name, line.rstrip())

    def last(self) -> str:
        return self._lines[-1] if self._lines else ""

    def close(self) -> None:
        """Stop writing; the reader ends once the server, holding the other end, is gone."""
        self.writer.close()
        self._pump.join(1.0)
