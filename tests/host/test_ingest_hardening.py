"""Issue 13 on the ingest service, over real HTTPS on 127.0.0.1: bodies past the limit (declared
or chunked) are 413, numbers that are not finite are 422 and nothing is stored, /metrics and
/openapi.json are not public, a bearer that is not ASCII is 401, the database is owner-only."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.host.ingest import IngestConfig, create_app
from edge_agent.host.ingest_store import IngestStore
from edge_agent.sync import Enrollment, SyncClient, enroll, pinned_context, wire
from tests.sync_support import HostServer, MaskAt, MemorySource, make_cert, make_interaction, token

pytestmark = pytest.mark.integration
MakeHost = Callable[..., HostServer]  # tests/host/conftest.py: a server on each store


def device(host: HostServer) -> Enrollment:
    return enroll(host.url, token(host), pin=host.cert.sha256)


def http(host: HostServer, headers: dict[str, Any] | None = None) -> httpx.Client:
    return httpx.Client(base_url=host.url, verify=pinned_context(host.cert.pem), headers=headers)


def bearer(e: Enrollment) -> dict[str, Any]:
    return {"Authorization": f"Bearer {e.credential}"}


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body without Content-Length: httpx sends it chunked."""
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


# --- finding 6: every request body has a limit, enforced while it is read ----------------------


def test_an_enrollment_body_past_the_limit_is_413(host: HostServer) -> None:
    body = json.dumps({"token": "x" * 2**20, "cert_sha256": "0" * 64}).encode()
    with http(host) as c:
        r = c.post("/v1/enroll", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert "limit" in r.json()["detail"]


def test_a_chunked_enrollment_body_past_the_limit_is_413(host: HostServer) -> None:
    with http(host) as c:
        r = c.post("/v1/enroll", content=chunks(4 * 2**20), headers={"Content-Type": "text/x"})
    assert r.status_code == 413, r.text
    assert "limit" in r.json()["detail"]


def test_a_chunked_batch_past_the_limit_is_413(host: HostServer) -> None:
    e = device(host)
    with http(host, bearer(e)) as c:
        r = c.post("/v1/batches", content=chunks(2 * 2**20), headers={wire.KEY_HEADER: "k" * 16})
    assert r.status_code == 413, r.text
    assert "limit" in r.json()["detail"] and host.store.records() == []


def test_the_batch_limit_is_configurable_and_a_real_batch_fits(make_host: MakeHost) -> None:
    server = make_host({"max_body_bytes": 4096})
    e = device(server)
    big = json.dumps({"protocol": 1, "records": [_record(i) for i in range(40)]}).encode()
    with http(server, bearer(e)) as c:
        assert _post(c, big).status_code == 413
        assert _post(c, _batch([_record(1)])).status_code == 200
    assert len(server.store.records()) == 1


# --- finding 8: numbers that are not finite never reach the store ------------------------------


def _record(i: int) -> dict[str, Any]:
    return make_interaction(i).model_dump(mode="json", exclude={"synced"})


def _batch(records: list[dict[str, Any]], *, replace: tuple[str, str] | None = None) -> bytes:
    text = json.dumps({"protocol": 1, "records": records})
    return (text.replace(*replace) if replace else text).encode()


def _post(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post("/v1/batches", content=body, headers={wire.KEY_HEADER: wire.batch_key(body)})


_SPOTS = {
    "recorded_at": b'"recorded_at": 1750000001.0',
    "argument": b'"name": "kitchen light", "note": "for Alice 1"',
}


def _planted(spot: str, number: str) -> bytes:
    """Two good records, then `number` written into record 1 where `spot` says."""
    body = _batch([_record(0), _record(1)])
    old = _SPOTS[spot]
    new = old.replace(b"1750000001.0", number.encode()).replace(b'"kitchen light"', number.encode())
    assert body.count(old) == 1
    return body.replace(old, new)


@pytest.mark.parametrize(
    ("spot", "number"),
    [
        ("recorded_at", "Infinity"),  # was stored as null, then `host train` crashed
        ("recorded_at", "NaN"),  # was a 500
        ("recorded_at", "-Infinity"),
        ("recorded_at", "1e999"),  # JSON's other way to write infinity
        ("argument", "1e999"),
        ("argument", "[1, NaN]"),
    ],
)
def test_non_finite_numbers_are_422_and_nothing_is_stored(
    host: HostServer, spot: str, number: str
) -> None:
    e = device(host)
    with http(host, bearer(e)) as c:
        r = _post(c, _planted(spot, number))
    assert r.status_code == 422, r.text
    assert "finite" in r.json()["detail"] and r.json()["records"] == [1]
    assert host.store.records() == []


def test_a_device_holds_back_only_the_record_with_a_non_finite_number(host: HostServer) -> None:
    """The 422 names the record, so the device's client sends the rest."""
    e = device(host)
    good = _record(0)
    bad = _record(1) | {"recorded_at": float("inf")}
    body = json.dumps({"protocol": 1, "records": [bad, good]}).encode()  # json writes Infinity
    with http(host, bearer(e)) as c:
        r = _post(c, body)
        assert r.status_code == 422 and r.json()["records"] == [0]
        assert _post(c, _batch([good])).status_code == 200
    assert [row["id"] for row in host.store.records()] == [good["result"]["id"]]


def test_the_sync_client_holds_back_a_non_finite_record_and_sends_the_rest(
    host: HostServer,
) -> None:
    items = [make_interaction(i) for i in range(5)]
    items[2] = items[2].model_copy(update={"recorded_at": float("nan")})
    source = MemorySource(items)
    with SyncClient(source, MaskAt(), device(host)) as client:
        report = client.sync()
    assert list(report.held) == [items[2].id] and "finite" in report.held[items[2].id]
    assert report.acknowledged == 4 and source.synced == {i.id for i in items} - {items[2].id}
    assert len(host.store.records()) == 4


def test_deep_nesting_is_a_clear_4xx_not_a_crash(host: HostServer) -> None:
    e = device(host)
    body = b'{"protocol": 1, "records": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    with http(host, bearer(e)) as c:
        r = _post(c, body)
    assert r.status_code in (400, 422), r.text
    assert r.json()["detail"] and host.store.records() == []


# --- finding 9: what the host exposes ----------------------------------------------------------


def test_metrics_and_openapi_are_not_public_by_default(host: HostServer) -> None:
    with http(host) as c:
        assert c.get("/metrics").status_code == 404  # no metrics token configured: off
        assert c.get("/openapi.json").status_code == 404
        assert c.get("/docs").status_code == 404
        assert c.get("/healthz").status_code == 200
    schema = host.app.openapi()  # tests and fuzzers still get the schema in-process
    assert "/v1/batches" in schema["paths"]


def test_openapi_can_be_asked_for(make_host: MakeHost) -> None:
    server = make_host({"openapi": True})
    with http(server) as c:
        assert "/v1/enroll" in c.get("/openapi.json").json()["paths"]


def test_metrics_need_the_token_and_a_non_ascii_bearer_is_401(make_host: MakeHost) -> None:
    server = make_host({"metrics_token": "m" * 20})
    e = device(server)
    weird = {"Authorization": b"Bearer \xe9\xe9\xe9"}  # latin-1 on the wire: 'ééé'
    with http(server) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=weird).status_code == 401  # was a 500
        assert c.get("/v1/device", headers=weird).status_code == 401
        forged = {"Authorization": f"Bearer {e.device_id}.".encode() + b"\xff" * 8}
        assert c.get("/v1/device", headers=forged).status_code == 401
        ok = c.get("/metrics", headers={"Authorization": "Bearer " + "m" * 20})
    assert ok.status_code == 200 and "edge_agent_ingest" in ok.text


def test_a_metrics_token_is_made_once_and_kept_owner_only(tmp_path: Path) -> None:
    from edge_agent.host.metrics import ensure_metrics_token

    path = tmp_path / "host" / "metrics.token"
    first = ensure_metrics_token(path)
    assert len(first) >= 32 and first.isascii()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_metrics_token(path) == first


def _modes(db: Path) -> dict[str, int]:
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in files if p.exists()}


def test_the_database_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    """SQLite's files (PostgreSQL keeps its own, in its data folder)."""
    host = HostServer(tmp_path / "host", make_cert(tmp_path)).start()
    try:
        with http(host, bearer(device(host))) as c:
            assert _post(c, _batch([_record(1)])).status_code == 200
        modes = _modes(host.root / "ingest.db")  # while open: the WAL is there
    finally:
        host.stop()
    assert set(modes) == {"ingest.db", "ingest.db-wal", "ingest.db-shm"}
    assert set(modes.values()) == {0o600}, modes


def test_an_existing_readable_database_is_made_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "ingest.db"
    old_umask = os.umask(0o022)
    try:
        IngestStore(db).close()  # e.g. made by an older version: 0644
        for path in tmp_path.glob("ingest.db*"):
            path.chmod(0o644)
    finally:
        os.umask(old_umask)
    store = IngestStore(db)
    try:
        store.create_token(60)
        assert set(_modes(db).values()) == {0o600}
    finally:
        store.close()


def test_create_app_serves_openapi_only_when_asked(tmp_path: Path) -> None:
    base = IngestConfig(db_path=tmp_path / "ingest.db", cert_sha256="0" * 64)
    assert create_app(base).openapi_url is None


def test_host_serve_makes_a_metrics_token_and_hides_openapi(
    tmp_path: Path, edge_home: Path
) -> None:
    """The command as an operator runs it: /metrics needs the token it made and printed the
    place of; /openapi.json is not served."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "edge_agent", "host", "serve", "--host", "127.0.0.1"]
    proc = subprocess.Popen([*argv, "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        token_file = edge_home / "data" / "host" / "metrics.token"
        url, cert = f"https://127.0.0.1:{port}", edge_home / "data" / "host" / "tls" / "host.crt"
        _wait_until_up(url, cert, proc)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        with httpx.Client(base_url=url, verify=pinned_context(cert.read_text())) as c:
            assert c.get("/metrics").status_code == 401
            auth = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
            assert c.get("/metrics", headers=auth).status_code == 200
            assert c.get("/openapi.json").status_code == 404
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"/metrics needs the Bearer token in {token_file}" in err


def _wait_until_up(url: str, cert: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        if cert.exists():
            try:
                with httpx.Client(verify=pinned_context(cert.read_text())) as c:
                    if c.get(url + "/healthz").status_code == 200:
                        return
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    raise AssertionError("host serve did not come up within 60 s")


def test_a_target_name_the_file_system_refuses_is_404_not_a_crash(tmp_path: Path) -> None:
    """Found by the schemathesis fuzz run: a 300-character path segment made stat() raise
    ENAMETOOLONG, a 500."""
    from fastapi import HTTPException

    from edge_agent.host.ingest import _inside

    with pytest.raises(HTTPException) as caught:
        _inside(tmp_path, "a" * 300 + ".gguf")
    assert caught.value.status_code == 404
