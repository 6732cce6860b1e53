"""Fuzzing `edge-agent host serve` (the ingest service) from its OpenAPI document (issue 13: one
request must not kill the server). Every operation gets valid and malformed requests (the
coverage phase's edge cases, then Hypothesis' positive and negative data), in process through
the ASGI app with its body limit; about a third of the valid ones carry a real credential, a
fresh enrollment token, a real batch. No answer may be a 5xx or a crash, and every answer must
be what the document promises.

The document is ``create_app(config).openapi()`` (the service does not publish it by default),
plus what ingest.py's docstring states and its OpenAPI does not (the fuzzer found each one;
reported to the service's owner): the batch body (`wire.WireBatch` as JSON, gzipped or not),
the ``{"detail": …}`` body of every 4xx, ``records`` in a batch's 422 (the document promises
FastAPI's ``detail`` list only), and what /metrics (Prometheus text) and /tuf/targets (bytes)
send (the document says JSON).
"""

from __future__ import annotations

import json
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode, Response
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation

from edge_agent.host.ingest import IngestConfig, create_app
from edge_agent.sync import wire
from tests.fuzz_support import fuzz_settings, half, header_values, tallied
from tests.sync_support import make_interaction

BODY, HEADER, PATH = ParameterLocation.BODY, ParameterLocation.HEADER, ParameterLocation.PATH
CERT = "ab" * 32  # the certificate hash devices pin
METRICS = "metrics-token-for-the-fuzzer"
ROOT = {"signed": {"_type": "root", "version": 1}, "signatures": []}  # served, not verified here


def ingest_config(folder: Path) -> IngestConfig:
    """Every route on: /metrics (a token) and /tuf (a repository with one root and one target)."""
    tuf = folder / "tuf"
    (tuf / "metadata").mkdir(parents=True)
    (tuf / "targets").mkdir()
    (tuf / "metadata" / "1.root.json").write_text(json.dumps(ROOT))
    (tuf / "metadata" / "root.json").write_text(json.dumps(ROOT))
    (tuf / "targets" / "home.gguf").write_bytes(b"GGUF adapter")
    return IngestConfig(
        db_path=folder / "ingest.db", cert_sha256=CERT, metrics_token=METRICS, tuf_dir=tuf
    )


def document() -> dict[str, Any]:
    """The app's own document, from an app built only for it, plus what the module says."""
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(ingest_config(Path(folder)))
        doc = app.openapi()
        app.state.store.close()
    batch = wire.WireBatch.model_json_schema(ref_template="#/components/schemas/{model}")
    doc["components"]["schemas"].update(batch.pop("$defs", {}), WireBatch=batch)
    paths = doc["paths"]
    push = paths["/v1/batches"]["post"]
    push["requestBody"] = {"required": True, "content": _json({"$ref": _ref("WireBatch")})}
    push["parameters"].append(_ENCODING)
    push["responses"]["422"] = _DETAIL
    paths["/metrics"]["get"]["responses"]["200"]["content"] = {"text/plain": {}}
    paths["/tuf/targets/{path}"]["get"]["responses"]["200"]["content"] = _BYTES
    for operation in (op for path in paths.values() for op in path.values()):
        operation["responses"].setdefault("4XX", _DETAIL)
    return doc


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> str:
    return f"#/components/schemas/{name}"


_ENCODING = {
    "name": "Content-Encoding",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": ["identity", "gzip"]},
}
_FASTAPI_DETAIL = {"type": "array", "items": {"$ref": _ref("ValidationError")}}
_DETAIL = {
    "description": "refused: {detail} (a batch's 422 also names the bad records)",
    "content": _json(
        {
            "type": "object",
            "required": ["detail"],
            "properties": {
                "detail": {"anyOf": [{"type": "string"}, _FASTAPI_DETAIL]},
                "records": {"type": "array", "items": {"type": "integer"}},
            },
        }
    ),
}
_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all"},
        # Valid by the schema, refused by what it cannot say: a spent token, a key another
        # body used, a quota.
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", 400, 401, 404, 409, 422]}
        },
    }
)
schema = schemathesis.openapi.from_dict(document(), config=CONFIG)


@dataclass
class Host:
    """One test's ingest app and an enrolled device on it."""

    app: FastAPI
    credential: str
    pushed_key: str

    def token(self) -> str:
        return str(self.app.state.store.create_token(3600))


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """A fresh app for each test (schemathesis ends its lifespan, which closes the store, with
    the test), a device enrolled on it, and one batch that device pushed."""
    app = create_app(ingest_config(tmp_path))
    store = app.state.store
    _, credential, _ = store.redeem(store.create_token(3600), 3600.0)
    return Host(app, credential, _push_one(app, credential))


def _push_one(app: FastAPI, credential: str) -> str:
    case = schema["/v1/batches"]["POST"].Case(body=batch(0), media_type="application/json")
    key = "fuzz-pushed-batch-0001"
    response = case.call(
        headers={"Authorization": f"Bearer {credential}", wire.KEY_HEADER: key}, app=app
    )
    assert response.status_code == 200, response.text
    return key


def batch(seed: int) -> dict[str, Any]:
    records = [
        make_interaction(seed * 10 + i).model_dump(mode="json", exclude={"synced"})
        for i in range(2)
    ]
    return {"protocol": 1, "records": records}


def steer(case: Case, host: Host) -> Case:
    """Make two thirds of the requests ones the service could say yes to: its credential, a
    fresh token, a real batch, a file that is there. Chosen by a checksum of the request, so
    a failing case replays the same; a part schemathesis made malformed is left as it is."""
    if case.meta is None:
        return case
    drawn = (case.path_parameters, case.headers, case.body)
    # Nothing drawn (/metrics): the one request gets the token; the hardening tests send none.
    crc = zlib.crc32(repr(drawn).encode("utf-8", "surrogatepass")) if any(drawn) else 1
    if crc % 3:
        _STEER.get(case.operation.label, _leave)(case, host, crc // 3)
    return case


Steer = Callable[[Case, Host, int], None]  # the case, its host, a checksum to choose by


def _valid(case: Case, location: ParameterLocation) -> bool:
    info = case.meta.components.get(location) if case.meta else None
    return info is None or info.mode is GenerationMode.POSITIVE


def _leave(case: Case, host: Host, crc: int) -> None:
    pass


def _enroll(case: Case, host: Host, crc: int) -> None:
    if _valid(case, BODY) and isinstance(case.body, dict):
        case.body.update(token=host.token(), cert_sha256=CERT)


def _push(case: Case, host: Host, crc: int) -> None:
    key = f"fuzz-batch-{crc:010d}"  # the same key for another body is a 409
    _headers(case, authorization=f"Bearer {host.credential}", **{wire.KEY_HEADER: key})
    if crc % 2 and _valid(case, BODY):
        case.body = batch(crc % 100)


def _batch(case: Case, host: Host, crc: int) -> None:
    _headers(case, authorization=f"Bearer {host.credential}")
    if crc % 2 and case.path_parameters and _valid(case, PATH):
        case.path_parameters["key"] = host.pushed_key


def _bearer(token: Callable[[Host], str]) -> Steer:
    def steer_to(case: Case, host: Host, crc: int) -> None:
        _headers(case, authorization=f"Bearer {token(host)}")

    return steer_to


def _file(name: str, value: str) -> Steer:
    def steer_to(case: Case, host: Host, crc: int) -> None:
        if case.path_parameters and _valid(case, PATH):
            case.path_parameters[name] = value

    return steer_to


def _headers(case: Case, **headers: str) -> None:
    if _valid(case, HEADER):
        case.headers.update(headers)  # case-insensitive: replaces a generated one


_STEER = {
    "POST /v1/enroll": _enroll,
    "POST /v1/batches": _push,
    "GET /v1/batches/{key}": _batch,
    "GET /v1/device": _bearer(lambda host: host.credential),
    "GET /metrics": _bearer(lambda _: METRICS),
    "GET /tuf/metadata/{name}": _file("name", "root.json"),
    "GET /tuf/targets/{path}": _file("path", "home.gguf"),
}


# --- every operation, valid and malformed data -------------------------------------------------


@schema.parametrize()
@fuzz_settings()
def test_no_request_breaks_the_ingest_service_or_its_document(host: Host, case: Case) -> None:
    send = partial(steer(case, host).call_and_validate, app=host.app)
    tallied("data", case, {}, send)


# Regressions of what these suites found in the host (both fixed in host/ingest.py).


def test_a_batch_the_wire_schema_forbids_is_a_422(host: Host) -> None:
    body = batch(1)
    body["records"][0]["recorded_at"] = False
    case = schema["/v1/batches"]["POST"].Case(body=body, media_type="application/json")
    headers = {"Authorization": f"Bearer {host.credential}", wire.KEY_HEADER: "fuzz-lax-wire-0001"}
    response = case.call(headers=headers, app=host.app)
    case.validate_response(response, checks=HEADER_CHECKS)
    assert response.status_code == 422


def test_an_enrollment_body_that_is_not_utf8_is_a_4xx(host: Host) -> None:
    case = schema["/v1/enroll"]["POST"].Case(body=b"\xff", media_type="text/plain")
    response = case.call(app=host.app)
    case.validate_response(response, checks=HEADER_CHECKS)
    assert 400 <= response.status_code < 500


# --- headers: Authorization, Content-Type, Content-Encoding ------------------------------------

GOOD = "<the credential>"  # the test puts in its device's (or the metrics) token
CREDENTIALED = {"POST /v1/batches", "GET /v1/batches/{key}", "GET /v1/device", "GET /metrics"}
_VALUE = header_values()
AUTHS = half(
    st.just(f"Bearer {GOOD}"),
    st.sampled_from([None, "Bearer", f"Basic {GOOD}", GOOD, f"Bearer {GOOD}é", "Bearer dev_x.y"])
    | _VALUE.map(lambda v: f"Bearer {v}")
    | _VALUE,
)
CONTENT_TYPES = st.none() | st.sampled_from(["application/json", "text/plain"]) | _VALUE
ENCODINGS = st.none() | st.sampled_from(["gzip", "identity", "br", "GZIP", ""]) | _VALUE


@schema.parametrize()
@schema.given(auth=AUTHS, content_type=CONTENT_TYPES, encoding=ENCODINGS)
@fuzz_settings()
def test_bad_headers_are_refused_in_the_documented_shape(
    host: Host, case: Case, auth: str | None, content_type: str | None, encoding: str | None
) -> None:
    token = METRICS if case.operation.label == "GET /metrics" else host.credential
    wanted = {"Authorization": auth, "Content-Type": content_type, "Content-Encoding": encoding}
    sent = {k: v.replace(GOOD, token) for k, v in wanted.items() if v is not None}
    steer(case, host)
    for name in wanted:  # ours replace the generated ones; None leaves one out
        case.headers.pop(name, None)
    send = partial(_expect_credential, host, case, sent)
    tallied("headers", case, sent, send)


def _expect_credential(host: Host, case: Case, headers: dict[str, str]) -> Response:
    """Past a wrong or missing credential nothing runs (401); never a 5xx, always as documented."""
    response = case.call(headers=headers, app=host.app)
    case.validate_response(response, checks=HEADER_CHECKS)
    token = headers.get("Authorization", "").removeprefix("Bearer ")
    if case.operation.label in CREDENTIALED and token not in (host.credential, METRICS):
        assert response.status_code == 401, response.text
    return response


HEADER_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
