"""Helpers for the sync and ingest tests: interactions, an in-memory source, a host on
127.0.0.1 over HTTPS that can restart, and a fault-injecting proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_agent.host.ingest import IngestConfig, create_app, serve_in_thread
from edge_agent.host.tls import self_signed
from edge_agent.tools import fingerprint
from edge_agent.types import (
    AgentResult,
    Effect,
    Interaction,
    LocalAttempt,
    Message,
    Routing,
    ToolCall,
    ToolOutcome,
    Usage,
)

SECRET = b"s" * 32


def make_interaction(i: int, *, request: str | None = None) -> Interaction:
    """A turn with personal data in the request, a tool argument, the result and a message."""
    call = ToolCall(
        id=f"call_{i:08d}",
        name="HassTurnOn",
        arguments={"name": "kitchen light", "note": f"for Alice {i}"},
    )
    outcome = ToolOutcome(
        call=call,
        effect=Effect.ACTUATING,
        status="ok",
        result={"success": True, "by": "alice@example.com"},
    )
    result = AgentResult(
        id=f"turn_{i:08d}",
        request=request or f"turn on the kitchen light and email bob.smith@example.com ({i})",
        answer="Done.",
        tool_calls=[outcome],
        model="/home/alice/models/smollm2.gguf",
        usage=Usage(prompt_tokens=10, completion_tokens=3),
    )
    messages = [Message(role="user", content=result.request)]
    return Interaction(result=result, messages=messages, recorded_at=1_750_000_000.0 + i)


# A user's own tools (issue 14): a thermostat skill the built-in skills know nothing of.
THERMOSTAT: list[dict[str, Any]] = [
    {
        "name": "set_temperature",
        "description": "Set a room's target temperature.",
        "parameters": {
            "type": "object",
            "properties": {"room": {"type": "string"}, "celsius": {"type": "number"}},
            "required": ["room", "celsius"],
            "additionalProperties": False,
        },
        "effect": "actuating",
    },
    {
        "name": "read_sensor",
        "description": "Read a sensor by name.",
        "parameters": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": False,
        },
    },
]
LIGHTS: list[dict[str, Any]] = [
    {"name": "lights_on", "description": "", "parameters": {"type": "object", "properties": {}}}
]


def thermostat_turn(i: int, schemas: list[dict[str, Any]] = THERMOSTAT) -> Interaction:
    """An escalated thermostat turn: the teacher's call ran, the SLM's attempt is kept; both
    hold personal values under tool and argument names that must reach the host intact."""
    call = ToolCall(
        id=f"call_t{i:07d}",
        name="set_temperature",
        arguments={"room": "Alice Smith's office", "celsius": 21},
    )
    attempt = LocalAttempt(
        model="/home/alice/models/smollm2.gguf",
        call=ToolCall(
            id=f"call_a{i:07d}", name="read_sensor", arguments={"name": "alice@example.com"}
        ),
    )
    result = AgentResult(
        id=f"turn_t{i:07d}",
        request=f"set Alice Smith's office to 21 degrees and mail alice@example.com ({i})",
        answer="Done.",
        tool_calls=[ToolOutcome(call=call, effect=Effect.ACTUATING, status="ok", result="ok")],
        model="gpt-teacher",
        skill="thermostat",
        toolset=fingerprint(schemas),
        route="escalated",
        routing=Routing(decision="remote", reason="teacher-first", local_attempt=attempt),
    )
    messages = [Message(role="user", content=result.request)]
    return Interaction(result=result, messages=messages, recorded_at=1_750_000_000.0 + i)


class MaskAt:
    """A stand-in scrubber, 100x faster than the anonymizer, for tests about the transport."""

    def scrub(self, text: str) -> str:
        return text.replace("@", " at ")

    def scrub_obj(self, obj: Any) -> Any:
        return json.loads(self.scrub(json.dumps(obj)))


class MemorySource:
    """A SyncSource in memory, thread-safe; counts how often each id was marked."""

    def __init__(
        self,
        items: Iterable[Interaction],
        toolsets: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        self.items = {item.id: item for item in items}
        self.toolsets = toolsets or {}
        self.synced: set[str] = set()
        self.marks: Counter[str] = Counter()
        self.lock = threading.Lock()

    def unsynced(self, limit: int = 100) -> list[Interaction]:
        with self.lock:
            return [v for k, v in self.items.items() if k not in self.synced][:limit]

    def toolset_schemas(self, fingerprint: str) -> list[dict[str, Any]] | None:
        return self.toolsets.get(fingerprint)

    def mark_synced(self, ids: Iterable[str]) -> int:
        with self.lock:
            todo = [i for i in ids if i in self.items and i not in self.synced]
            self.synced.update(todo)
            self.marks.update(todo)
            return len(todo)


@dataclass
class Cert:
    cert: Path
    key: Path
    sha256: str

    @property
    def pem(self) -> str:
        return self.cert.read_text()


def make_cert(folder: Path, name: str = "host") -> Cert:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    return Cert(cert, key, self_signed(cert, key, names=["127.0.0.1"]))


@dataclass
class HostServer:
    """The ingest service on 127.0.0.1 over HTTPS; ``restart()`` keeps the port and the DB."""

    root: Path
    cert: Cert
    options: dict[str, Any] = field(default_factory=dict)
    port: int = 0
    url: str = ""
    app: Any = None
    _stack: contextlib.ExitStack | None = None

    @property
    def config(self) -> IngestConfig:
        base = IngestConfig(db_path=self.root / "ingest.db", cert_sha256=self.cert.sha256)
        return replace(base, **self.options)

    def start(self) -> HostServer:
        self._stack = contextlib.ExitStack()
        self.app = create_app(self.config)
        self.url = self._stack.enter_context(
            serve_in_thread(self.app, self.cert.cert, self.cert.key, port=self.port)
        )
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def store(self) -> Any:
        return self.app.state.store


def token(host: HostServer, ttl_s: float = 3600) -> str:
    return host.store.create_token(ttl_s)


# --- the fault-injecting proxy ------------------------------------------------------------------

FAULTS = (
    "pass",
    "drop",
    "cut_request",
    "lost_answer",
    "cut_answer",
    "duplicate",
    "error_503",
    "error_after",
    "delay",
    "stall",
)
_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 0\r\ncontent-length: 24\r\nconnection: close\r\n\r\n"
    b'{"detail":"overloaded"}\n'
)
_502 = _503.replace(b"503 Service Unavailable", b"502 Bad Gateway")


class FaultProxy:
    """A TLS-terminating HTTP/1.1 proxy on 127.0.0.1 with the host's own certificate (so the
    device's pin holds), which picks one fault per request: the connection dropped before or
    cut in the middle of the request, the answer lost or cut after the host stored the batch,
    the request sent twice at once, a 503 instead of the host, a 502 after it, delays, stalls
    past the client's timeout. One request per connection."""

    def __init__(
        self, upstream_port: int, cert: Cert, weights: dict[str, float], *, seed: int = 7
    ) -> None:
        self.upstream_port = upstream_port
        self.cert = cert
        self.faults: Sequence[str] = list(weights)
        self.weights = list(weights.values())
        self.pick = random.Random(seed)  # its own stream: the same faults in the same order
        self.rng = random.Random(seed + 1)
        self.counts: Counter[str] = Counter()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None
        self.url = ""
        self.upstream_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # made once: ~ms each
        self.upstream_tls.check_hostname, self.upstream_tls.verify_mode = False, ssl.CERT_NONE

    def start(self) -> FaultProxy:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self.loop)
        self.url = f"https://127.0.0.1:{future.result(10)}"
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _listen(self) -> int:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert.cert, self.cert.key)
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ctx)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head, body = await _read_request(reader)
            fault = self.pick.choices(self.faults, self.weights)[0]
            self.counts[fault] += 1
            await self._apply(fault, head, body, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.counts["upstream_down_or_client_gone"] += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _apply(self, fault: str, head: bytes, body: bytes, out: asyncio.StreamWriter) -> None:
        if fault == "drop":
            return
        if fault == "error_503":
            out.write(_503)
        elif fault == "cut_request":
            await self._forward(head, body, cut=len(body) // 2)
        elif fault == "duplicate":
            answers = await asyncio.gather(self._forward(head, body), self._forward(head, body))
            out.write(answers[self.rng.randrange(2)])
        elif fault in ("lost_answer", "error_after"):
            await self._forward(head, body)
            if fault == "error_after":
                out.write(_502)
        elif fault == "cut_answer":
            answer = await self._forward(head, body)
            out.write(answer[: len(answer) // 2])
        else:
            await asyncio.sleep({"delay": self.rng.uniform(0.02, 0.15), "stall": 1.5}.get(fault, 0))
            out.write(await self._forward(head, body))
        await out.drain()

    async def _forward(self, head: bytes, body: bytes, cut: int | None = None) -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.upstream_port, ssl=self.upstream_tls
        )
        try:
            writer.write(_close_after(head) + (body if cut is None else body[:cut]))
            await writer.drain()
            if cut is not None:
                return b""
            chunks = []
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
            return b"".join(chunks)
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return head, await reader.readexactly(length)


def _close_after(head: bytes) -> bytes:
    lines = [h for h in head.split(b"\r\n") if h and not h.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close", b"", b""])
