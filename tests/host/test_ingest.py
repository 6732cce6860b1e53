"""The ingest service over real HTTPS on 127.0.0.1: enrollment, authentication, isolation,
idempotency, limits, quotas, forgetting, retention and metrics."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.errors import EnrollmentError, PinMismatchError
from edge_agent.host.ingest_store import Quota
from edge_agent.sync import Enrollment, SyncClient, SyncOptions, enroll, pinned_context, wire
from tests.sync_support import (
    SECRET,
    HostServer,
    MemorySource,
    make_cert,
    make_interaction,
    token,
)

pytestmark = pytest.mark.integration
MakeHost = Callable[..., HostServer]  # tests/host/conftest.py: a server on each store


def device(host: HostServer, **kw: Any) -> Enrollment:
    return enroll(host.url, token(host), pin=host.cert.sha256, **kw)


def http(host: HostServer, enrollment: Enrollment | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {enrollment.credential}"} if enrollment else {}
    return httpx.Client(base_url=host.url, verify=pinned_context(host.cert.pem), headers=headers)


def post_batch(
    client: httpx.Client, records: list[dict[str, Any]], key: str | None = None, **extra: Any
) -> httpx.Response:
    body = json.dumps({"protocol": 1, "records": records}).encode()
    headers = {wire.KEY_HEADER: key or wire.batch_key(body), **extra.pop("headers", {})}
    return client.post("/v1/batches", content=body, headers=headers, **extra)


def rec(i: int, **update: Any) -> dict[str, Any]:
    data = make_interaction(i).model_dump(mode="json", exclude={"synced"})
    data["result"].update(update)
    return data


# --- enrollment ---------------------------------------------------------------------------------


def test_enrollment_gives_credential_pin_and_limits(host: HostServer) -> None:
    e = device(host)
    assert e.device_id.startswith("dev_") and e.credential.startswith(e.device_id + ".")
    assert e.cert_sha256 == host.cert.sha256
    assert e.host_limits.max_batch_records == 1000
    with http(host, e) as c:
        assert c.get("/v1/device").json()["id"] == e.device_id


def test_token_reuse_is_rejected(host: HostServer) -> None:
    t = token(host)
    enroll(host.url, t, pin=host.cert.sha256)
    with pytest.raises(EnrollmentError, match="used already"):
        enroll(host.url, t, pin=host.cert.sha256)


def test_expired_and_unknown_tokens_are_rejected(host: HostServer) -> None:
    t = token(host, ttl_s=-1)
    with pytest.raises(EnrollmentError, match="expired"):
        enroll(host.url, t)
    with pytest.raises(EnrollmentError, match="unknown"):
        enroll(host.url, "et_" + "x" * 30)


def test_wrong_pin_is_refused_before_the_token_is_sent(host: HostServer) -> None:
    t = token(host)
    with pytest.raises(PinMismatchError):
        enroll(host.url, t, pin="sha256:" + "ab" * 32)
    assert enroll(host.url, t, pin=host.cert.sha256).device_id  # the token was not spent


def test_a_host_with_another_certificate_is_refused(host: HostServer, tmp_path: Path) -> None:
    """After enrollment the device talks to nothing but the pinned certificate."""
    e = device(host)
    host.stop()
    host.cert = make_cert(tmp_path, "impostor")  # same address, same DB, other certificate
    host.start()
    source = MemorySource([make_interaction(1)])
    from edge_agent.anonymize import Anonymizer

    with SyncClient(source, Anonymizer(SECRET), e) as client, pytest.raises(PinMismatchError):
        client.sync()
    assert not source.synced and host.store.records() == []


# --- authentication and isolation ---------------------------------------------------------------


def test_forged_missing_and_expired_credentials_are_rejected(make_host: MakeHost) -> None:
    now = [time.time()]
    server = make_host({"credential_ttl_days": 1.0})
    server.app.state.store.clock = lambda: now[0]
    e = device(server)
    forged = e.credential[:-4] + "AAAA"
    for header in ({}, {"Authorization": f"Bearer {forged}"}, {"Authorization": "Basic x"}):
        with http(server) as c:
            r = post_batch(c, [rec(1)], headers=header)
        assert r.status_code == 401 and "enroll" in r.json()["detail"]
    now[0] += 2 * 86_400
    with http(server, e) as c:
        assert post_batch(c, [rec(1)]).status_code == 401
    assert server.store.records() == []


def test_a_device_cannot_read_or_overwrite_another(host: HostServer) -> None:
    a, b = device(host), device(host)
    with http(host, b) as cb:
        r = post_batch(cb, [rec(1, request="B's own words")], key="k" * 20)
        assert r.status_code == 200
    with http(host, a) as ca:
        assert ca.get(f"/v1/batches/{'k' * 20}").status_code == 404  # B's key: not visible
        r = post_batch(ca, [rec(1, request="A writing over B")], key="k" * 20)
        assert r.status_code == 200 and r.json()["stored"] == 1  # A's own namespace
    stored = {
        (r["device_id"], json.loads(r["body"])["result"]["request"]) for r in host.store.records()
    }
    assert stored == {(b.device_id, "B's own words"), (a.device_id, "A writing over B")}


# --- idempotency --------------------------------------------------------------------------------


def test_same_key_and_body_replays_the_first_answer(host: HostServer) -> None:
    e = device(host)
    with http(host, e) as c:
        first = post_batch(c, [rec(1), rec(2)])
        again = post_batch(c, [rec(1), rec(2)])
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers[wire.REPLAYED_HEADER] == "true"
    assert len(host.store.records()) == 2


def test_same_key_with_another_body_is_a_conflict(host: HostServer) -> None:
    e = device(host)
    with http(host, e) as c:
        assert post_batch(c, [rec(1)], key="same-key-0123456789").status_code == 200
        r = post_batch(c, [rec(2)], key="same-key-0123456789")
    assert r.status_code == 409 and "another body" in r.json()["detail"]
    assert len(host.store.records()) == 1


def test_a_record_in_two_batches_is_stored_once(host: HostServer) -> None:
    e = device(host)
    with http(host, e) as c:
        post_batch(c, [rec(1), rec(2)])
        r = post_batch(c, [rec(2), rec(3)])
    assert r.json() | {"received_at": 0} == {
        "key": r.json()["key"],
        "received": 2,
        "stored": 1,
        "duplicates": 1,
        "received_at": 0,
    }
    assert len(host.store.records()) == 3


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b"{not json", {}, 400, "not JSON"),
        (b'{"protocol": 2, "records": []}', {}, 422, "schema"),
        (b'{"protocol": 1, "records": [{"result": {}}]}', {}, 422, "records.0.result"),
        (b"\x1f\x8b\x08garbage", {"Content-Encoding": "gzip"}, 400, "gzip"),
        (b"{}", {"Content-Encoding": "br"}, 415, "gzip"),
        (b"x" * (2**20 + 1), {}, 413, "limit"),
        (gzip.compress(b" " * (9 * 2**20)), {"Content-Encoding": "gzip"}, 413, "unpacks"),
    ],
)
def test_bad_batches_get_a_clear_4xx(
    host: HostServer, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    e = device(host)
    with http(host, e) as c:
        r = c.post("/v1/batches", content=body, headers={wire.KEY_HEADER: "k" * 16, **headers})
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert host.store.records() == []


def test_too_many_records_and_bad_keys(make_host: MakeHost) -> None:
    server = make_host({"max_batch_records": 2})
    with http(server, device(server)) as c:
        assert post_batch(c, [rec(1), rec(2), rec(3)]).status_code == 413
        assert post_batch(c, [rec(1)], key="short").status_code == 400
        bad = post_batch(c, [rec(1), rec(2, tool_calls="nope")])
    assert bad.status_code == 422 and bad.json()["records"] == [1]


def test_daily_quota_answers_429_with_retry_after(make_host: MakeHost) -> None:
    server = make_host({"quota": Quota(records_per_day=3)})
    with http(server, device(server)) as c:
        assert post_batch(c, [rec(1), rec(2)]).status_code == 200
        r = post_batch(c, [rec(3), rec(4)])
        assert post_batch(c, [rec(1), rec(2)]).status_code == 200  # a replay is free
        assert post_batch(c, [rec(3)]).status_code == 200  # the refused batch counted nothing
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 86_401
    assert len(server.store.records()) == 3


def test_the_batch_rate_limit_answers_429_until_the_next_minute(make_host: MakeHost) -> None:
    now = [1_749_999_960.0]  # a minute's start
    server = make_host({"quota": Quota(batches_per_minute=2)})
    server.store.clock = lambda: now[0]
    with http(server, device(server)) as c:
        assert post_batch(c, [rec(1)]).status_code == 200
        assert post_batch(c, [rec(2)]).status_code == 200
        assert post_batch(c, [rec(1)]).status_code == 200  # a replay is no new batch
        refused = post_batch(c, [rec(3)])
        now[0] += 60
        assert post_batch(c, [rec(3)]).status_code == 200
    assert refused.status_code == 429 and "2 batches a minute" in refused.json()["detail"]
    assert refused.headers["Retry-After"] == "61"
    assert len(server.store.records()) == 3


# --- forgetting, retention, metrics -------------------------------------------------------------


def test_forget_deletes_everything_of_one_device(host: HostServer) -> None:
    a, b = device(host), device(host)
    for e in (a, b):
        with http(host, e) as c:
            post_batch(c, [rec(1), rec(2)])
    gone = host.store.forget(a.device_id)
    assert gone["records"] == 2 and gone["devices"] == 1 and gone["batches"] == 1
    assert {r["device_id"] for r in host.store.records()} == {b.device_id}
    with http(host, a) as c:
        assert c.get("/v1/device").status_code == 401  # the credential went too
    if host.config.database_url is None:
        raw = (host.root / "ingest.db").read_bytes()
        assert a.device_id.encode() not in raw  # secure_delete + checkpoint: not in free pages


def test_retention_drops_old_records(host: HostServer) -> None:
    with http(host, device(host)) as c:
        post_batch(c, [rec(1)])
    assert host.store.apply_retention(days=1) == 0
    host.store.clock = lambda: time.time() + 2 * 86_400
    assert host.store.apply_retention(days=1) == 1
    assert host.store.records() == []


def test_metrics_count_batches_records_and_refusals(make_host: MakeHost) -> None:
    host = make_host({"metrics_token": "m" * 20})
    with http(host, device(host)) as c:
        post_batch(c, [rec(1)])
        post_batch(c, [rec(1)])
        c.get("/v1/device", headers={"Authorization": "Bearer nope"})
        text = c.get("/metrics", headers={"Authorization": "Bearer " + "m" * 20}).text
    assert 'edge_agent_ingest_batches_total{outcome="replayed"} 1.0' in text
    assert 'edge_agent_ingest_records_total{outcome="stored"} 1.0' in text
    assert "edge_agent_ingest_auth_failures_total 1.0" in text
    assert 'route="/v1/batches",status="200"' in text and "dev_" not in text


def test_metrics_token_is_enforced(make_host: MakeHost) -> None:
    server = make_host({"metrics_token": "m" * 20})
    with http(server) as c:
        assert c.get("/metrics").status_code == 401
        ok = c.get("/metrics", headers={"Authorization": "Bearer " + "m" * 20})
    assert ok.status_code == 200


# --- the device's client against the real host ---------------------------------------------------


def test_sync_client_pushes_anonymized_records_and_marks_them(host: HostServer) -> None:
    from edge_agent.anonymize import Anonymizer

    source = MemorySource(make_interaction(i) for i in range(25))
    options = SyncOptions(batch_records=10)
    with SyncClient(source, Anonymizer(SECRET), device(host), options) as client:
        report = client.sync()
    assert report.acknowledged == report.stored == 25 and report.batches == 3
    assert source.synced == set(source.items)
    bodies = " ".join(r["body"] for r in host.store.records())
    assert "alice@example.com" not in bodies and "bob.smith" not in bodies
    assert "/home/alice" not in bodies and "<EMAIL" in bodies
