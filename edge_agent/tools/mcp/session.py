"""An MCP session that outlives its connections: a dead server is reconnected on the next call.

An always-on device cannot restart because a tool server did. When the connection is gone (a
stdio server exited or was killed, an HTTP server went away) the next call re-opens it: it
re-spawns the stdio server or reconnects over HTTP, re-lists the tools (handing them to
`on_reconnect`), then sends the call. A call goes out again on a new connection only when it
provably never reached the server (`NotSent`): the old connection had already ended, or the
restarted HTTP server did not know the session. A call cut off on its way may have run, so it
fails and is never repeated: an actuating tool must not act twice.

Failed reconnects back off (0.5 s doubling to 30 s): calls in between fail at once, so a dead
server costs no busy loop and no hung turn. Every call ends within its timeout, reconnect
included (a reconnect that times out stops what it started, which the SDK bounds at a few
seconds for a stdio server).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any, TextIO

from mcp import Client
from mcp_types import CallToolResult, ListToolsResult
from mcp_types import Tool as ToolInfo

from edge_agent.errors import ConfigError, ToolError, ToolExecutionError
from edge_agent.tools.mcp.connection import Connection, NotSent, Opener, Request, reason

log = logging.getLogger("edge_agent.tools.mcp")  # one logger for the package
MAX_PAGES = 100  # a server whose cursors never end cannot hang the connect
_STDERR_LINES = 20  # of a stdio server's stderr, kept for error messages
_MARK = "\x00edge-agent: read up to here\n"  # written by the reader's own side


class Backoff:
    """How long to wait before the next reconnect after `failures` in a row: none after a
    success, then `first_s` doubling up to `max_s`."""

    def __init__(self, first_s: float = 0.5, max_s: float = 30.0) -> None:
        self.first_s, self.max_s = first_s, max_s
        self.failures = 0
        self._next_at = 0.0

    def failed(self) -> None:
        self.failures += 1
        delay = min(self.first_s * 2 ** (self.failures - 1), self.max_s)
        self._next_at = time.monotonic() + delay

    def succeeded(self) -> None:
        self.failures, self._next_at = 0, 0.0

    def wait_s(self) -> float:
        """Seconds until a reconnect may be tried (0: now)."""
        return max(self._next_at - time.monotonic(), 0.0)


class Session:
    """An MCP client session, reconnected when its connection is lost. ``where`` (the command
    or URL) names the server in errors."""

    def __init__(
        self, name: str, where: str, opener: Opener, timeout_s: float, *, stdio: bool
    ) -> None:
        self.name, self.where, self.timeout_s = name, where, timeout_s
        self.description = ""  # the server's instructions or title, once connected
        # Gets the tools a reconnected server lists before any call goes out on it; a ToolError
        # from it fails the reconnect.
        self.on_reconnect: Callable[[list[ToolInfo]], None] | None = None
        self.backoff = Backoff()
        self._opener = opener
        self._stderr = _StderrTail(name) if stdio else None
        self._lock = threading.Lock()  # one reconnect at a time
        self._closed = False
        self._connection: Connection | None = None
        self._last_failure = ""

    def start(self) -> None:
        """Connect; ConfigError when the server cannot be started or reached, or does not
        answer within the timeout (it is stopped then)."""
        self._connection = self._connect(time.monotonic() + self.timeout_s)

    @property
    def connected(self) -> bool:
        """Whether a call would go out now without reconnecting first."""
        connection = self._connection
        return connection is not None and connection.alive and not self._closed

    def list_tools(self) -> list[ToolInfo]:
        """Every tool the server lists, page after page."""
        deadline = time.monotonic() + self.timeout_s
        return _all_tools(self._current(deadline), self, deadline)

    def call(
        self, tool: str, arguments: dict[str, Any], check: Callable[[], None] | None = None
    ) -> CallToolResult:
        """Run `tool`, reconnecting first if the connection is gone; `check` runs just before
        the call goes out (after any reconnect) and may refuse it with a ToolError."""
        deadline = time.monotonic() + self.timeout_s

        def request(client: Client, left_s: float) -> Any:
            return client.call_tool(tool, arguments, read_timeout_seconds=left_s)

        for _ in range(2):  # a call that never left goes out once more, no more
            connection = self._current(deadline)
            if check is not None:
                check()
            try:
                result: CallToolResult = self._submit(connection, request, f"run {tool}", deadline)
                return result
            except NotSent:
                log.info("MCP server %r: %s was not sent; reconnecting", self.name, tool)
        raise ToolExecutionError(
            f"MCP server {self.name!r} lost each new connection: {tool} was not sent"
        )

    def close(self) -> None:
        """End the session (a stdio server: its stdin closed, then terminated). Idempotent;
        waits for a reconnect in progress, which then stops what it started."""
        self._closed = True
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
        if self._stderr:
            self._stderr.close()

    # -- connections -------------------------------------------------------------------------

    def _submit(self, connection: Connection, request: Request, doing: str, deadline: float) -> Any:
        return connection.submit(request, doing, deadline, self.timeout_s)

    def _current(self, deadline: float) -> Connection:
        """The live connection, reconnected if it is gone (unless backing off)."""
        if not self._lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise ToolExecutionError(f"MCP server {self.name!r} is still reconnecting")
        try:
            if self._closed:
                raise ToolExecutionError(f"MCP server {self.name!r} is not connected (closed)")
            connection = self._connection
            if connection is not None and connection.alive:
                return connection
            self._connection = None
            if connection is not None:
                self._lost(connection)
            self._connection = self._reconnect(deadline)
            return self._connection
        finally:
            self._lock.release()

    def _lost(self, connection: Connection) -> None:
        why = reason(connection.ended) if connection.ended else "the server closed the connection"
        log.warning("MCP server %r: lost (%s)%s; reconnecting", self.name, why, self._tail())
        connection.close()

    def _reconnect(self, deadline: float) -> Connection:
        wait = self.backoff.wait_s()
        if wait > 0:
            raise ToolExecutionError(
                f"MCP server {self.name!r} ({self.where}) is unreachable "
                f"({self._last_failure}); the next reconnect is in {wait:.1f} s"
            )
        try:
            connection = self._connect(deadline)
            if self.on_reconnect is not None:
                self._hand_over(connection, deadline)
        except (ConfigError, ToolError) as exc:
            self.backoff.failed()
            self._last_failure = str(exc)
            message = f"MCP server {self.name!r} could not reconnect: {exc}"
            raise ToolExecutionError(message) from exc
        self.backoff.succeeded()
        log.warning("MCP server %r: reconnected (%s)", self.name, self.where)
        return connection

    def _hand_over(self, connection: Connection, deadline: float) -> None:
        assert self.on_reconnect is not None
        try:
            self.on_reconnect(_all_tools(connection, self, deadline))
        except BaseException:
            connection.close()
            raise

    def _connect(self, deadline: float) -> Connection:
        errlog = self._stderr.writer if self._stderr else None
        connection = Connection(self.name, self._opener, errlog)
        try:
            connection.start(max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise self._unreachable(f"it did not answer within {self.timeout_s:g} s") from None
        except Exception as exc:
            raise self._unreachable(reason(exc)) from exc
        self.description = connection.description
        return connection

    def _unreachable(self, why: str) -> ConfigError:
        if self._stderr:  # the server is gone: what it wrote is all in the pipe
            self._stderr.catch_up()
        return ConfigError(
            f"cannot connect to MCP server {self.name!r} ({self.where}): {why}{self._tail()}"
        )

    def _tail(self) -> str:
        last = self._stderr.last() if self._stderr else ""
        return f"; its stderr ends: {last}" if last else ""


def _all_tools(connection: Connection, session: Session, deadline: float) -> list[ToolInfo]:
    tools: list[ToolInfo] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page: ListToolsResult = session._submit(
            connection, _page_at(cursor), "list its tools", deadline
        )
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            return tools
    raise ConfigError(f"MCP server {session.name!r} lists tools past {MAX_PAGES} pages")


def _page_at(cursor: str | None) -> Request:
    # a new client each connection, so its cache never serves the old server's list
    return lambda client, _: client.list_tools(cursor=cursor)


class _StderrTail:
    """A stdio server's stderr: each line to the debug log, the last few kept, so an error
    can say why the server died (a traceback's last line, a missing key). One pipe serves
    every server process the session starts."""

    def __init__(self, name: str) -> None:
        read_fd, write_fd = os.pipe()
        self.writer: TextIO = os.fdopen(write_fd, "w")
        self._lines: deque[str] = deque(maxlen=_STDERR_LINES)
        self._caught_up = threading.Event()
        reader = os.fdopen(read_fd, "r", errors="replace")
        self._pump = threading.Thread(
            target=self._read, args=(name, reader), name=f"mcp-{name}-stderr", daemon=True
        )
        self._pump.start()

    def _read(self, name: str, reader: IO[str]) -> None:
        with reader:
            for line in reader:
                if line == _MARK:
                    self._caught_up.set()
                elif line.strip():
                    self._lines.append(line.strip())
                    log.debug("MCP server %r: %s", name, line.rstrip())

    def last(self) -> str:
        return self._lines[-1] if self._lines else ""

    def catch_up(self, wait_s: float = 1.0) -> None:
        """Wait until the reader has read all that was written so far."""
        self._caught_up.clear()
        try:
            self.writer.write(_MARK)
            self.writer.flush()
        except (OSError, ValueError):  # closed
            return
        self._caught_up.wait(wait_s)

    def close(self) -> None:
        """Stop writing; the reader ends once the server, holding the other end, is gone."""
        self.writer.close()
        self._pump.join(1.0)
