"""The sync client against httpx.MockTransport: retries, backoff, limits, held-back records,
idempotency across a crash, opt-in, and what leaves the device."""

from __future__ import annotations

import gzip
import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.anonymize import Anonymizer
from edge_agent.errors import (
    BatchRejectedError,
    EnrollmentError,
    HostUnreachableError,
    SyncError,
)
from edge_agent.settings import Settings
from edge_agent.sync import (
    Backoff,
    Enrollment,
    SyncClient,
    SyncOptions,
    SyncWorker,
    open_client,
    redact,
    wire,
)
from edge_agent.types import (
    AgentResult,
    Feedback,
    Interaction,
    LocalAttempt,
    Message,
    Routing,
    ToolCall,
    ToolOutcome,
)
from tests.sync_support import SECRET, MemorySource, make_interaction

LIMITS = {"max_body_bytes": 2**20, "max_decoded_bytes": 8 * 2**20, "max_batch_records": 1000}
Action = int | str | Exception | Callable[[list[dict[str, Any]]], httpx.Response]


def enrollment(**limits: int) -> Enrollment:
    return Enrollment(
        host_url="https://host.test",
        device_id="dev_1",
        credential="dev_1.s3cret",
        cert_pem="",
        cert_sha256="0" * 64,
        expires_at=time.time() + 3600,
        enrolled_at=time.time(),
        limits=LIMITS | limits,
    )


class FakeHost:
    """The host's protocol in memory, with a script of what to do per request: a status code,
    an exception, "lost" (store, then cut the connection) or a function of the records."""

    def __init__(self, *script: Action) -> None:
        self.script = list(script)
        self.records: dict[str, dict[str, Any]] = {}
        self.answers: dict[str, dict[str, Any]] = {}
        self.keys: list[str] = []
        self.sizes: list[tuple[int, int]] = []  # (records, decoded bytes) per request

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer dev_1.s3cret"
        body = gzip.decompress(request.content)
        key = request.headers[wire.KEY_HEADER]
        assert key == wire.batch_key(body)
        records = json.loads(body)["records"]
        self.keys.append(key)
        self.sizes.append((len(records), len(body)))
        action = self.script.pop(0) if self.script else "ok"
        if isinstance(action, Exception):
            raise action
        if isinstance(action, int):
            return httpx.Response(action, json={"detail": "scripted"}, headers={"Retry-After": "0"})
        if callable(action):
            return action(records)
        answer = self.store(key, records)
        if action == "lost":
            raise httpx.ReadError("the connection broke after the host stored the batch")
        return httpx.Response(200, json=answer)

    def store(self, key: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        if key not in self.answers:
            new = [r for r in records if r["result"]["id"] not in self.records]
            self.records.update({r["result"]["id"]: r for r in new})
            self.answers[key] = {
                "key": key,
                "received": len(records),
                "stored": len(new),
                "duplicates": len(records) - len(new),
                "received_at": 0.0,
            }
        return self.answers[key]


def client(
    source: MemorySource, host: FakeHost, *, sleeps: list[float] | None = None, **options: Any
) -> SyncClient:
    opts = SyncOptions(**({"backoff": Backoff(base_s=0.1, cap_s=2.0)} | options))
    recorded = sleeps if sleeps is not None else []
    return SyncClient(
        source,
        Anonymizer(SECRET),
        enrollment(),
        opts,
        transport=httpx.MockTransport(host),
        sleep=recorded.append,
        rng=random.Random(1),
    )


def source(n: int) -> MemorySource:
    return MemorySource(make_interaction(i) for i in range(n))


# --- retries and backoff ------------------------------------------------------------------------


def test_transient_failures_are_retried_then_marked() -> None:
    src, sleeps = source(5), list[float]()
    host = FakeHost(httpx.ConnectError("refused"), 503, httpx.ReadTimeout("slow"), 429)
    report = client(src, host, sleeps=sleeps).sync()
    assert report.retries == 4 and len(sleeps) == 4
    assert src.synced == set(src.items) and len(host.records) == 5


def test_backoff_is_exponential_with_full_jitter() -> None:
    backoff, rng = Backoff(base_s=1.0, cap_s=8.0), random.Random(0)
    for attempt in range(6):
        draws = [backoff.delay(attempt, rng) for _ in range(200)]
        ceiling = min(8.0, 2.0**attempt)
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.8 * ceiling  # the whole range is used: jitter, not a fixed step


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    def busy(after: str) -> Callable[[Any], httpx.Response]:
        return lambda _: httpx.Response(
            429, json={"detail": "quota"}, headers={"Retry-After": after}
        )

    sleeps: list[float] = []
    client(source(1), FakeHost(busy("1.5"), busy("99999")), sleeps=sleeps).sync()
    assert sleeps[0] >= 1.5 and sleeps[1] == 2.0


def test_gives_up_after_max_attempts_and_keeps_the_records() -> None:
    src = source(3)
    with pytest.raises(HostUnreachableError, match="failed 3 times"):
        client(src, FakeHost(*[503] * 10), max_attempts=3).sync()
    assert not src.synced


def test_a_refused_credential_means_enroll_again() -> None:
    src, host = source(3), FakeHost(401)
    with pytest.raises(EnrollmentError, match="enroll"):
        client(src, host).sync()
    assert not src.synced and len(host.keys) == 1


@pytest.mark.parametrize("status", [400, 409, 415])
def test_a_batch_refused_as_a_whole_keeps_its_records(status: int) -> None:
    src = source(3)
    with pytest.raises(BatchRejectedError, match="stay on this device"):
        client(src, FakeHost(status)).sync()
    assert not src.synced


def test_an_answer_for_another_batch_is_refused() -> None:
    other = {"key": "b1_other", "received": 1, "stored": 1, "duplicates": 0, "received_at": 0}
    src = source(1)
    with pytest.raises(BatchRejectedError, match="another batch"):
        client(src, FakeHost(lambda _: httpx.Response(200, json=other))).sync()
    assert not src.synced


def test_stop_interrupts_the_backoff() -> None:
    stop = threading.Event()
    src = source(2)
    sync = SyncClient(
        src,
        Anonymizer(SECRET),
        enrollment(),
        SyncOptions(backoff=Backoff(base_s=30, cap_s=30), max_attempts=None),
        transport=httpx.MockTransport(FakeHost(*[503] * 100)),
        stop=stop,
    )
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    report = sync.sync()
    assert time.monotonic() - started < 5 and report.acknowledged == 0 and not src.synced


# --- idempotency across a crash -----------------------------------------------------------------


def test_a_retry_after_a_crash_reuses_the_key_and_is_stored_once() -> None:
    src, host = source(4), FakeHost("lost")
    with pytest.raises(HostUnreachableError):
        client(src, host, max_attempts=1).sync()  # the host stored it; the device never heard
    assert not src.synced and len(host.records) == 4
    report = client(src, host).sync()  # a fresh process rebuilds the same batch
    assert host.keys[0] == host.keys[1]
    assert report.acknowledged == 4 and src.synced == set(src.items)  # the first answer, replayed
    assert len(host.records) == 4


# --- limits, the queue, held-back records -------------------------------------------------------


def test_batches_respect_the_record_and_byte_limits() -> None:
    src, host = source(50), FakeHost()
    report = client(src, host, batch_records=7, batch_bytes=4000).sync()
    assert report.acknowledged == 50 and len(host.records) == 50
    assert all(n <= 7 and size <= 4000 for n, size in host.sizes)
    assert any(n < 7 for n, _ in host.sizes[:-1])  # some batches were cut by bytes


def test_the_host_limits_from_enrollment_apply() -> None:
    src, host = source(10), FakeHost()
    sync = SyncClient(
        src,
        Anonymizer(SECRET),
        enrollment(max_batch_records=3),
        SyncOptions(),
        transport=httpx.MockTransport(host),
    )
    sync.sync()
    assert max(n for n, _ in host.sizes) == 3 and len(host.records) == 10


def test_the_in_memory_queue_is_bounded() -> None:
    src, asked = source(100), list[int]()
    unsynced = src.unsynced

    def spy(limit: int = 100) -> list[Interaction]:
        asked.append(limit)
        return unsynced(limit)

    src.unsynced = spy  # type: ignore[method-assign]
    client(src, FakeHost(), batch_records=10, queue_batches=2).sync()
    assert max(asked) == 20 and len(src.synced) == 100


def test_oversized_batches_are_bisected_and_a_too_big_record_is_held_back() -> None:
    def refuse_big(records: list[dict[str, Any]]) -> httpx.Response:
        if len(records) > 2 or any("HUGE" in r["result"]["request"] for r in records):
            return httpx.Response(413, json={"detail": "too large"})
        return httpx.Response(200, json=host.store(wire.batch_key(_body(records)), records))

    items = [make_interaction(i) for i in range(8)]
    items[5] = make_interaction(5, request="HUGE " * 50)
    src = MemorySource(items)
    host = FakeHost(*[refuse_big] * 50)
    report = client(src, host).sync()
    assert set(report.held) == {"turn_00000005"} and "413" in report.held["turn_00000005"]
    assert src.synced == set(src.items) - {"turn_00000005"} and len(host.records) == 7


def test_records_the_host_names_as_invalid_are_held_back_and_the_rest_sent() -> None:
    bad = httpx.Response(422, json={"detail": "records.1.result: nope", "records": [1]})
    src, host = source(4), FakeHost(lambda _: bad)
    report = client(src, host).sync()
    assert list(report.held) == ["turn_00000001"]
    assert src.synced == {"turn_00000000", "turn_00000002", "turn_00000003"}


def test_a_record_larger_than_any_batch_is_held_without_sending() -> None:
    src = MemorySource([make_interaction(0, request="long " * 2000), make_interaction(1)])
    host = FakeHost()
    report = client(src, host, batch_bytes=4000).sync()
    assert "larger than a batch" in report.held["turn_00000000"]
    assert set(host.records) == {"turn_00000001"}


def test_the_upload_rate_is_limited() -> None:
    now, sleeps = [0.0], []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    src, host = source(40), FakeHost()
    sync = SyncClient(
        src,
        Anonymizer(SECRET),
        enrollment(),
        SyncOptions(batch_records=5, max_bytes_per_s=500.0),
        transport=httpx.MockTransport(host),
        sleep=sleep,
        clock=lambda: now[0],
    )
    report = sync.sync()
    first_batch = len(gzip.compress(b"x"))  # ~ any one batch; only the total matters
    assert report.bytes_sent / 500.0 == pytest.approx(now[0] + first_batch / 500.0, rel=0.2)
    assert len(sleeps) == report.batches - 1


# --- opt-in and what leaves ---------------------------------------------------------------------


def test_nothing_leaves_unless_enabled_and_enrolled(tmp_path: Path) -> None:
    settings = Settings(config_dir=tmp_path / "c", data_dir=tmp_path / "d", cache_dir=tmp_path)
    with pytest.raises(SyncError, match="sync is off"):
        open_client(settings, source(1), scrubber=Anonymizer(SECRET))
    enabled = settings.model_copy(update={"sync_enabled": True})
    with pytest.raises(EnrollmentError, match="not enrolled"):
        open_client(enabled, source(1), scrubber=Anonymizer(SECRET))


def test_what_leaves_is_anonymized() -> None:
    src, host = source(3), FakeHost()
    client(src, host).sync()
    sent = json.dumps(list(host.records.values()))
    for personal in ("alice@example.com", "bob.smith@example.com", "/home/alice", "Alice"):
        assert personal not in sent
    assert "<EMAIL" in sent and "kitchen light" in sent and "turn_00000001" in sent


def test_redact_knows_every_field() -> None:
    """A new field on these types must be added to redact() (scrubbed or deliberately kept)."""
    assert set(Interaction.model_fields) == {
        "result",
        "messages",
        "feedback",
        "recorded_at",
        "synced",
    }
    assert set(AgentResult.model_fields) == {
        "id",
        "request",
        "answer",
        "tool_calls",
        "outcome",
        "error",
        "failure",
        "model",
        "adapter",
        "skill",  # kept: a skill's name, not the user's words
        "toolset",  # kept: a fingerprint; the batch carries its schemas verbatim
        "route",
        "prior_calls",
        "steps",
        "latency_ms",
        "timings",
        "usage",
        "confirmation_id",
        "routing",
        "label_of",  # kept: a record id
    }
    assert set(Routing.model_fields) == {
        "decision",
        "reason",
        "signals",
        "remote_model",
        "remote_error",
        "local_attempt",
        "remote_usage",
        "remote_bytes",
        "remote_ms",
        "queued",
        "audit_share",  # kept: a number
    }
    assert set(LocalAttempt.model_fields) == {
        "model",
        "adapter",
        "call",
        "answer",
        "error",
        "latency_ms",
        "usage",
    }
    assert set(ToolOutcome.model_fields) == {
        "call",
        "effect",
        "status",
        "result",
        "error",
        "duration_ms",
    }
    assert set(ToolCall.model_fields) == {"id", "name", "arguments"}
    assert set(Message.model_fields) == {"role", "content", "name", "tool_call_id"}
    assert set(Feedback.model_fields) == {"rating", "comment"}


def test_redact_is_pure_and_scrubs_feedback_and_names() -> None:
    item = make_interaction(1).model_copy(
        update={
            "feedback": Feedback(rating="down", comment="call me at alice@example.com"),
            "messages": [Message(role="user", content="hi", name="alice@example.com")],
        }
    )
    before = item.model_dump()
    out = redact(item, Anonymizer(SECRET))
    assert item.model_dump() == before
    assert out.feedback is not None and "alice" not in (out.feedback.comment or "")
    assert "alice" not in (out.messages[0].name or "")
    assert out.result.model == "smollm2.gguf" and out.id == item.id


# --- the worker ---------------------------------------------------------------------------------


def test_worker_syncs_in_the_background_and_stops() -> None:
    src, host = source(30), FakeHost()
    pulled: list[str] = []

    def make(stop: threading.Event) -> SyncClient:
        return SyncClient(
            src,
            Anonymizer(SECRET),
            enrollment(),
            SyncOptions(batch_records=8),
            transport=httpx.MockTransport(host),
            stop=stop,
        )

    worker = SyncWorker(
        make, interval_s=60, tasks=[lambda c: pulled.append(c.enrollment.device_id)]
    )
    worker.start()
    deadline = time.monotonic() + 10
    while len(src.synced) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    late = make_interaction(99)
    src.items[late.id] = late
    worker.kick()
    while late.id not in src.synced and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    assert len(src.synced) == 31 and worker.rounds >= 2 and worker.last_error is None
    assert pulled[:1] == ["dev_1"]


def test_worker_survives_a_failing_round() -> None:
    src = source(2)

    def make(stop: threading.Event) -> SyncClient:
        return SyncClient(
            src,
            Anonymizer(SECRET),
            enrollment(),
            SyncOptions(),
            transport=httpx.MockTransport(FakeHost(401)),
            stop=stop,
        )

    worker = SyncWorker(make, interval_s=0.01).start()
    time.sleep(0.2)
    worker.stop()
    assert worker.rounds >= 2 and isinstance(worker.last_error, EnrollmentError)


def _body(records: list[dict[str, Any]]) -> bytes:
    parts = [
        json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        for r in records
    ]
    return wire.batch_body(parts)
