"""The host's ingest service: devices enroll with a one-time token, then push anonymized
batches over HTTPS (`edge-agent host serve`).

    POST /v1/enroll           {token, cert_sha256} → credential, limits (token spent)
    POST /v1/batches          Bearer credential, Idempotency-Key, gzip JSON → BatchResult
    GET  /v1/batches/{key}    this device's answer for a key (404 for any other device's)
    GET  /v1/device           this device: records stored, credential expiry
    GET  /metrics             Prometheus, Bearer metrics_token (no token configured: no route)
    GET  /tuf/metadata/{file}, /tuf/targets/{path}   the signed adapter repository (read-only,
                              no credential: TUF metadata is public and verified by devices)

Errors are JSON ``{"detail": …}``: 400 unreadable body, 401 credential, 409 key reused for
another body, 413 too large, 415 encoding, 422 schema or a number that is not finite
(``records`` lists the bad indices), 429 daily quota (Retry-After).

A batch's tool sets (fingerprint -> schemas) must each hash to their fingerprint and build a
toolset (`Toolset.from_schemas`, the same limits as any tool schema); a batch failing either
is a 422 naming the records that use the bad tool set, and nothing of it is stored. Every
fingerprint a record names must come with its schemas in the same batch (`wire.WireBatch`).

Nothing but these routes is public: no /docs, and /openapi.json only with ``openapi=True``
(``create_app(config).openapi()`` gives the schema in-process, to tests and fuzzers).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import hashlib
import hmac
import json
import os
import pickle
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.host.ingest_store import (
    DAY_S,
    Incoming,
    IngestStore,
    KeyConflict,
    Quota,
    QuotaExceeded,
    TokenRefused,
    ToolsetConflict,
)
from edge_agent.host.metrics import MULTIPROC_ENV, IngestMetrics, forget_worker
from edge_agent.sync import wire
from edge_agent.tools import Toolset, fingerprint

_KEY = re.compile(wire.KEY_PATTERN)


@dataclass(frozen=True)
class IngestConfig:
    db_path: Path  # the SQLite store, unless database_url names another
    cert_sha256: str  # the certificate devices pin: reported at enrollment
    # A batch on the wire. A device packs at most sync_batch_kb (256 KiB) of JSON per batch
    # and gzips it, so its largest batch is ~256 KiB: 1 MiB leaves 4x headroom.
    max_body_bytes: int = 2**20
    max_decoded_bytes: int = 8 * 2**20  # after gunzip: a gzip bomb stops here
    max_request_bytes: int = 64 * 2**10  # any other request (an enrollment is < 1 KiB)
    max_batch_records: int = 1000
    quota: Quota = field(default_factory=Quota)
    credential_ttl_days: float = 365.0
    retention_days: float | None = 180.0
    trusted_root: dict[str, Any] | None = None  # the adapter repository's root of trust
    metrics_token: str | None = None  # None: no /metrics route at all
    tuf_dir: Path | None = None  # an AdapterRepository folder, served under /tuf
    openapi: bool = False  # serve /openapi.json (it maps the attack surface for anyone)
    # postgresql://…: a store that several workers (processes, machines) share; None: db_path
    database_url: str | None = None

    @property
    def store_target(self) -> Path | str:
        return self.database_url or self.db_path

    @property
    def limits(self) -> wire.Limits:
        return wire.Limits(
            max_body_bytes=self.max_body_bytes,
            max_decoded_bytes=self.max_decoded_bytes,
            max_batch_records=self.max_batch_records,
        )


def create_app(config: IngestConfig, *, clock: Callable[[], float] = time.time) -> FastAPI:
    store = IngestStore(config.store_target, clock=clock)
    metrics = IngestMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if config.retention_days is not None:  # before serving: no race with the first requests
            await run_in_threadpool(store.apply_retention, config.retention_days)
        task = asyncio.create_task(_retention_loop(store, config.retention_days))
        try:
            yield
        finally:
            task.cancel()
            store.close()

    app = FastAPI(
        title="edge-agent ingest",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if config.openapi else None,
    )
    app.state.store, app.state.config, app.state.metrics = store, config, metrics
    limits = {"/v1/batches": config.max_body_bytes}
    app.add_middleware(BodyLimit, limit_for=lambda path: limits.get(path, config.max_request_bytes))
    metrics.instrument(app)  # after: outside the limit, so the metrics count its 413s

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, and a body that is not UTF-8 cannot be echoed
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(_Unprocessable)
    async def unprocessable(_: Request, exc: _Unprocessable) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, "records": exc.records}, status_code=422)

    _routes(app, store, config, metrics)
    if config.tuf_dir is not None:
        _tuf_routes(app, config.tuf_dir)
    return app


def serve(
    config: IngestConfig,
    *,
    host: str,
    port: int,
    certfile: Path,
    keyfile: Path,
    workers: int = 1,
    graceful_timeout_s: float = 30.0,
) -> None:
    """Serve HTTPS until SIGTERM or SIGINT, then stop accepting, finish the requests in flight
    (for up to `graceful_timeout_s`, then drop them unanswered) and return.

    `workers` > 1: that many processes on one port (uvicorn binds it, starts each worker and
    restarts one that dies), each with its own store connection, so the store must be one
    that several processes share safely. A batch is answered only after its transaction
    commits: a worker stopped or killed before that answers nothing, and the device retries
    with the same idempotency key."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "ssl_certfile": str(certfile),
        "ssl_keyfile": str(keyfile),
        "timeout_graceful_shutdown": graceful_timeout_s,
    }
    if workers == 1:
        uvicorn.run(create_app(config), **options)
        return
    with _worker_setup(config):
        uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, **options)


def app_from_env() -> FastAPI:
    """One worker's app (`serve(workers=N)`), from the config its parent left in the file that
    EDGE_INGEST_WORKER_CONFIG names (uvicorn starts workers from an import string)."""
    # pickle: the parent wrote the file into its own 0700 folder a moment ago
    config = pickle.loads(Path(os.environ[_WORKER_CONFIG_ENV]).read_bytes())
    if not isinstance(config, IngestConfig):
        raise ConfigError(f"{os.environ[_WORKER_CONFIG_ENV]} holds no ingest config")
    atexit.register(forget_worker, os.getpid())
    _stop_with_parent()
    return create_app(config)


def _stop_with_parent() -> None:
    """A worker whose supervisor was killed outright stops too (SIGTERM from the kernel),
    rather than keep serving the port on its own (Linux only: elsewhere it keeps serving)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_WORKER_CONFIG_ENV = "EDGE_INGEST_WORKER_CONFIG"


@contextlib.contextmanager
def _worker_setup(config: IngestConfig) -> Iterator[None]:
    """A fresh private folder for the workers' config and their metrics files, named in the
    environment they inherit; removed when they have all stopped."""
    with tempfile.TemporaryDirectory(prefix="edge-agent-ingest-") as folder:
        (Path(folder) / "config.pickle").write_bytes(pickle.dumps(config))
        (Path(folder) / "metrics").mkdir()
        names = {_WORKER_CONFIG_ENV: "config.pickle", MULTIPROC_ENV: "metrics"}
        before = {name: os.environ.get(name) for name in names}
        os.environ.update({name: str(Path(folder) / leaf) for name, leaf in names.items()})
        try:
            yield
        finally:
            for name, value in before.items():
                os.environ.pop(name, None)
                if value is not None:
                    os.environ[name] = value


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI, certfile: Path, keyfile: Path, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """Serve HTTPS from a daemon thread (tests, embedding); yields ``https://HOST:PORT``.
    Leaving the block stops it within a second, open requests or not."""
    config = uvicorn.Config(
        app,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = _StoppingServer(config)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise ConfigError("the ingest server did not start; see the log for why")
                time.sleep(0.01)
            yield f"https://{host}:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)


class _StoppingServer(uvicorn.Server):
    """Leaves no socket open when it stops. uvicorn closes each connection with a TLS
    close_notify and waits for the peer's; an idle keep-alive client (a device's connection
    pool) never answers, so after the graceful timeout the rest are aborted here, before the
    thread's event loop closes under them."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        for connection in list(self.server_state.connections):
            connection.transport.abort()
        await asyncio.sleep(0)  # the aborts close their sockets on the next loop pass


async def _retention_loop(store: IngestStore, days: float | None) -> None:
    while days is not None:
        await asyncio.sleep(3600)
        await run_in_threadpool(store.apply_retention, days)


def _device(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The device a Bearer credential belongs to, or a 401."""
    state = request.app.state
    scheme, _, credential = (authorization or "").partition(" ")
    device_id = state.store.authenticate(credential) if scheme.lower() == "bearer" else None
    if device_id is None:
        state.metrics.auth_failures.inc()
        raise HTTPException(
            401,
            "unknown, forged or expired credential: enroll the device again",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return str(device_id)


Device = Annotated[str, Depends(_device)]


def _routes(app: FastAPI, store: IngestStore, config: IngestConfig, metrics: IngestMetrics) -> None:
    _enroll_route(app, store, config, metrics)

    @app.post("/v1/batches")
    async def push(
        request: Request,
        device_id: Device,
        key: Annotated[str, Header(alias=wire.KEY_HEADER)],
    ) -> Response:
        if not _KEY.match(key):
            raise HTTPException(400, f"{wire.KEY_HEADER} must match {wire.KEY_PATTERN}")
        raw = await request.body()  # BodyLimit bounds it
        body = _decoded(raw, request.headers.get("content-encoding"), config.max_decoded_bytes)
        batch = _validated(body, config.max_batch_records)
        toolsets = await run_in_threadpool(_checked_toolsets, store, batch)
        incoming = Incoming(
            device_id=device_id,
            key=key,
            wire_bytes=len(raw),
            body_sha256=hashlib.sha256(body).hexdigest(),
            records=[
                (r.id, r.recorded_at, r.model_dump_json(exclude={"synced"})) for r in batch.records
            ],
            toolsets=toolsets,
        )
        result, replayed = await run_in_threadpool(_ingest, store, incoming, config.quota)
        metrics.count(result, replayed, len(raw))
        headers = {wire.REPLAYED_HEADER: "true"} if replayed else {}
        return JSONResponse(result.model_dump(), headers=headers)

    _device_routes(app, store)
    _ops_routes(app, store, config, metrics)


def _enroll_route(
    app: FastAPI, store: IngestStore, config: IngestConfig, metrics: IngestMetrics
) -> None:
    @app.post("/v1/enroll")
    async def enroll(body: wire.EnrollRequest) -> wire.EnrollResponse:
        if not hmac.compare_digest(body.cert_sha256, config.cert_sha256):
            # The token is not spent: the device talked to something else first.
            raise HTTPException(
                400,
                f"you pinned sha256:{body.cert_sha256}, but this host's "
                f"certificate is sha256:{config.cert_sha256}: a TLS proxy?",
            )
        try:
            ttl = config.credential_ttl_days * DAY_S
            device_id, credential, expires = await run_in_threadpool(store.redeem, body.token, ttl)
        except TokenRefused as exc:
            metrics.enrollments.labels("refused").inc()
            raise HTTPException(401, str(exc)) from exc
        metrics.enrollments.labels("ok").inc()
        return wire.EnrollResponse(
            device_id=device_id,
            credential=credential,
            expires_at=expires,
            cert_sha256=config.cert_sha256,
            limits=config.limits,
            trusted_root=config.trusted_root or _tuf_root(config.tuf_dir),
        )


def _device_routes(app: FastAPI, store: IngestStore) -> None:
    @app.get("/v1/batches/{key}")
    def batch(key: str, device_id: Device) -> wire.BatchResult:
        result = store.batch_result(device_id, key)
        if result is None:  # another device's key looks exactly like a missing one
            raise HTTPException(404, f"no batch {key} from this device")
        return result

    @app.get("/v1/device")
    def whoami(device_id: Device) -> dict[str, Any]:
        found = [d for d in store.devices() if d["id"] == device_id]
        return found[0] if found else {"id": device_id}


def _ops_routes(
    app: FastAPI, store: IngestStore, config: IngestConfig, metrics: IngestMetrics
) -> None:
    wanted = f"Bearer {config.metrics_token}".encode() if config.metrics_token else None

    if wanted is not None:  # public metrics would say how big the fleet is and how busy

        @app.get("/metrics")
        def prometheus(request: Request) -> Response:
            # Bytes: compare_digest refuses a str that is not ASCII (a 500, not a 401).
            given = request.headers.get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, wanted):
                raise HTTPException(401, "metrics need the metrics token (Bearer)")
            return metrics.render(store)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}


def _tuf_routes(app: FastAPI, folder: Path) -> None:
    metadata, targets = folder / "metadata", folder / "targets"

    @app.get("/tuf/metadata/{name}")
    def tuf_metadata(name: str) -> FileResponse:
        return FileResponse(_inside(metadata, name), media_type="application/json")

    @app.get("/tuf/targets/{path:path}")
    def tuf_target(path: str) -> FileResponse:
        return FileResponse(_inside(targets, path), media_type="application/octet-stream")


def _inside(base: Path, relative: str) -> Path:
    """`relative` under `base`, or a 404: no '..', no hidden files, no link out of `base`."""
    parts = relative.split("/")
    bad = any(not p or p.startswith(".") or "\\" in p or "\0" in p for p in parts)
    try:  # a name the file system refuses (too long, …) names no file either
        path = base.joinpath(*parts).resolve() if not bad else base
        found = not bad and path.is_relative_to(base.resolve()) and path.is_file()
    except OSError:
        found = False
    if not found:
        raise HTTPException(404, f"no {relative} in the adapter repository")
    return path


def _tuf_root(folder: Path | None) -> dict[str, Any] | None:
    """The repository's current root.json, read at each enrollment (it may have been renewed)."""
    if folder is None:
        return None
    try:
        return dict(json.loads((folder / "metadata" / "root.json").read_bytes()))
    except (OSError, ValueError):
        return None


def _checked_toolsets(store: IngestStore, batch: wire.WireBatch) -> dict[str, str]:
    """The batch's tool sets as canonical JSON, each checked against its fingerprint and
    rebuilt once (a stored one was rebuilt when it came); else a 422 naming their records."""
    canonical, bad = {}, {}
    for fp, schemas in batch.toolsets.items():
        if fingerprint(schemas) != fp:
            bad[fp] = "its schemas do not hash to it"
        elif (problem := _unbuildable(store, fp, schemas)) is not None:
            bad[fp] = problem
        canonical[fp] = json.dumps(schemas, sort_keys=True, separators=(",", ":"))
    if bad:
        fp, why = next(iter(bad.items()))
        records = [i for i, r in enumerate(batch.records) if r.result.toolset in bad]
        raise _Unprocessable(f"{len(bad)} bad tool set(s), first {fp}: {why}", records)
    return canonical


def _unbuildable(store: IngestStore, fp: str, schemas: wire.ToolSchemas) -> str | None:
    if store.toolset_schemas(fp) is not None:
        return None
    try:
        Toolset.from_schemas(f"toolset-{fp[:12]}", schemas)
    except (EdgeAgentError, TypeError, ValueError) as exc:
        return f"its schemas build no toolset: {exc}"
    return None


def _ingest(store: IngestStore, incoming: Incoming, quota: Quota) -> tuple[wire.BatchResult, bool]:
    try:
        return store.ingest(incoming, quota)
    except KeyConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    except ToolsetConflict as exc:
        raise HTTPException(422, str(exc)) from exc
    except QuotaExceeded as exc:
        raise HTTPException(
            429, str(exc), headers={"Retry-After": str(int(exc.retry_after_s) + 1)}
        ) from exc


class _TooLarge(HTTPException):
    def __init__(self, path: str, limit: int) -> None:
        super().__init__(413, f"the body for {path} passes {limit} bytes, this host's limit")


class BodyLimit:
    """Every request body has a limit (``limit_for(path)``), enforced while it is read: a
    declared Content-Length past it is refused before the app runs, a chunked body as soon
    as the bytes read pass it. 413 with a JSON detail either way."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, limit = scope["path"], self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
        # isascii: '²' is a digit to isdigit() but not to int(); 19+ digits pass any limit
        if (
            declared.isascii()
            and declared.isdigit()
            and (len(declared) > 18 or int(declared) > limit)
        ):
            await _answer(_TooLarge(path, limit), scope, receive, send)
            return
        seen, started = 0, False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge(path, limit)  # the route's handler answers it (ExceptionMiddleware)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _TooLarge as exc:  # read outside a route: answer it here
            if started:
                raise
            await _answer(exc, scope, receive, send)


async def _answer(exc: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    await response(scope, receive, send)


def _decoded(raw: bytes, encoding: str | None, limit: int) -> bytes:
    if encoding in (None, "", "identity"):
        body = raw
    elif encoding == "gzip":
        inflate = zlib.decompressobj(wbits=31)
        try:
            body = inflate.decompress(raw, limit + 1)
        except zlib.error as exc:
            raise HTTPException(400, f"the gzip body is damaged: {exc}") from exc
        if not inflate.eof and len(body) <= limit:
            raise HTTPException(400, "the gzip body is truncated")
    else:
        raise HTTPException(415, f"Content-Encoding {encoding!r}: send gzip or identity")
    if len(body) > limit:
        raise HTTPException(413, f"the batch unpacks past {limit} bytes, this host's limit")
    return body


def _validated(body: bytes, max_records: int) -> wire.WireBatch:
    bad = wire.non_finite_records(body)
    if bad is not None:  # pydantic would take them: stored as null, unreadable afterwards
        where = f"records {bad}" if bad else "the batch"
        detail = f"{where}: a number is NaN, Infinity or past the float range; JSON numbers "
        raise _Unprocessable(detail + "must be finite", bad)
    try:
        # strict: the wire schema as written (false or "1.5" is no number), nothing coerced
        batch = wire.WireBatch.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise _schema_error(exc) from exc
    if len(batch.records) > max_records:
        raise HTTPException(413, f"{len(batch.records)} records; this host takes {max_records}")
    return batch


def _schema_error(exc: ValidationError) -> HTTPException:
    errors = exc.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return HTTPException(400, f"the batch is not JSON: {errors[0]['msg']}")
    per_record = [
        e["loc"][1]
        for e in errors
        if len(e["loc"]) > 1 and e["loc"][0] == "records" and isinstance(e["loc"][1], int)
    ]
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "batch"
    detail = f"the batch fails the schema ({len(errors)} errors), first at {where}: {first['msg']}"
    # Name the bad records when only records are bad: the device holds those back, sends the rest.
    return _Unprocessable(detail, sorted(set(per_record)) if len(per_record) == len(errors) else [])


class _Unprocessable(HTTPException):
    def __init__(self, detail: str, records: list[int]) -> None:
        super().__init__(422, detail)
        self.records = records
