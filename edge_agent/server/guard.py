"""What every request passes before the app sees it: a Host this server answers to, no browser
Origin it was not told to trust, the bearer token, and a body of bounded size.

A web page can reach a loopback server. DNS rebinding points the page's own name at 127.0.0.1,
so its requests arrive as same-origin ones carrying ``Host: attacker.example`` (the Host check
stops them); a cross-site page sends its ``Origin`` (the Origin check stops it); the token
stops a page that gets past both. A request without an Origin is not a browser's (curl, an
SDK) and passes that check. Refusals are 4xx in OpenAI's error shape, sent before any body
is read; a body is counted as it arrives, chunked or not, so a huge one is never held.

Starlette's TrustedHostMiddleware answers a plain-text 400 and FastAPI's ``max_body_size`` a
plain-text 413 when Content-Length is too large, hence this one small ASGI middleware.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_agent.server.schemas import APIError

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
_CLOSE = {"connection": "close"}  # do not read the rest of a refused body


@dataclass
class Rules:
    """What the guard enforces; ``serve`` completes it once the bound address is known."""

    api_key: str | None = None
    hosts: frozenset[str] = frozenset()  # names answered besides the loopback ones; '*': any
    origins: frozenset[str] = frozenset()  # browser origins allowed; '*': any
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        self.api_key = self.api_key or None  # an empty key is no key
        self.hosts = frozenset(host_name(h) for h in self.hosts)
        self.origins = frozenset(_origin(o) for o in self.origins)
        self._configured = bool(self.hosts)

    def bound_to(self, host: str) -> None:
        """Answer to the bound name too. Bound to every interface (which takes an API key),
        answer to any name unless names were configured, as Jupyter does."""
        if host not in WILDCARD_BINDS:
            self.hosts |= {host_name(host)}
        elif not self._configured:
            self.hosts |= {"*"}

    def host_allowed(self, header: str) -> bool:
        name = host_name(_without_port(header))
        return "*" in self.hosts or name in LOOPBACK_HOSTS or name in self.hosts

    def origin_allowed(self, header: str) -> bool:
        return "*" in self.origins or _origin(header) in self.origins

    def authorized(self, header: bytes) -> bool:
        """A constant-time comparison of bytes: a header is whatever bytes the client sent."""
        if self.api_key is None:
            return True
        scheme, _, token = header.partition(b" ")
        expected = self.api_key.encode("utf-8")
        return scheme.lower() == b"bearer" and secrets.compare_digest(token.strip(), expected)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit; FastAPI lets HTTPExceptions
    through its body parsing, so the app's handler answers it in OpenAI's shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit), headers=_CLOSE)


class Guard:
    """The ASGI middleware: refuse early, else pass the request on with a counted body."""

    def __init__(self, app: ASGIApp, rules: Rules) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = refusal_of(self.rules, scope)
        if refusal is not None:
            response = JSONResponse(refusal.body.model_dump(), refusal.status, headers=_CLOSE)
            await response(scope, receive, send)
            return
        await self.app(scope, _counted(receive, self.rules.max_body_bytes), send)


def refusal_of(rules: Rules, scope: Scope) -> APIError | None:
    """Why a request is refused, checked in order: Host, Origin, token, declared size."""
    headers = Headers(scope=scope)
    if not rules.host_allowed(headers.get("host", "")):
        return APIError(403, _HOST, code="host_not_allowed")
    origin = headers.get("origin")
    if origin is not None and not rules.origin_allowed(origin):
        return APIError(403, _ORIGIN.format(origin=origin), code="origin_not_allowed")
    if not _preflight(scope, headers) and not rules.authorized(_raw(headers, "authorization")):
        return APIError(401, _KEY, code="invalid_api_key")
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > rules.max_body_bytes:
        return APIError(413, _too_large(rules.max_body_bytes), code="request_too_large")
    return None


_HOST = (
    "this server does not answer to that Host name (a web page rebinding its name to this "
    "device?); use localhost or 127.0.0.1, or add the name to server_allowed_hosts"
)
_ORIGIN = (
    "requests from the web page at {origin!r} are not allowed; add its origin to "
    "server_allowed_origins"
)
_KEY = "missing or wrong API key; send the header 'Authorization: Bearer <key>'"


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes (server_max_body_bytes)"


def _counted(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


def host_name(host: str) -> str:
    """A host as a Host header names it: lower case, an IPv6 address in brackets."""
    host = host.strip().lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _without_port(header: str) -> str:
    header = header.strip()
    if header.startswith("["):  # [::1]:8080
        return header[: header.find("]") + 1]
    name, colon, port = header.rpartition(":")
    return name if colon and port.isdigit() else header


def _origin(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


def _preflight(scope: Scope, headers: Headers) -> bool:
    """A CORS preflight: browsers send no credentials with it, and it runs nothing."""
    preflight = "origin" in headers and "access-control-request-method" in headers
    return scope["method"] == "OPTIONS" and preflight


def _raw(headers: Headers, name: str) -> bytes:
    return headers.get(name, "").encode("latin-1")  # Starlette decoded the bytes as latin-1
