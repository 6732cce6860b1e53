"""The sync client: anonymized batches from the log to the enrolled host, each record once.

A record is marked synced only after the host acknowledged the batch that carried it, so a
crash or a cut connection at any point means the batch is sent again; the host recognizes it
by its idempotency key (a hash of its bytes) and keeps each record id once per device.

A batch carries the schemas of the tool sets its records name, as the log keeps them (never
anonymized: they describe the tools, not the user). A record whose schemas the log no longer
has (shredded, or logged before the log kept them) goes without its fingerprint, as an older
device's would: the host needs the schemas to use a fingerprint at all.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import httpx
from pydantic import ValidationError

from edge_agent.errors import (
    BatchRejectedError,
    EnrollmentError,
    HostUnreachableError,
    PinMismatchError,
    SyncError,
)
from edge_agent.sync import wire
from edge_agent.sync.enrollment import Enrollment, describe, pin_failed, pinned_context
from edge_agent.sync.redact import Scrubber, redact
from edge_agent.types import Interaction

log = logging.getLogger(__name__)
_RETRY_STATUSES = frozenset({408, 425, 429})
_ENVELOPE_BYTES = 64  # '{"protocol":1,"records":[...],"toolsets":{...}}' around the rest
_TOOLSET_BYTES = 40  # '"<32 hex>":' and a comma around one tool set's schemas


class SyncSource(Protocol):
    """Where records come from and are marked sent (``edge_agent.logstore.LogStore``)."""

    def unsynced(self, limit: int = 100) -> Sequence[Interaction]: ...

    def mark_synced(self, ids: Iterable[str]) -> int: ...

    def toolset_schemas(self, fingerprint: str) -> list[dict[str, Any]] | None: ...


@dataclass(frozen=True)
class Backoff:
    base_s: float = 1.0
    cap_s: float = 300.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        # Full jitter: a fleet that lost its host together does not come back in lockstep.
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2.0**attempt))


@dataclass(frozen=True)
class SyncOptions:
    batch_records: int = 200
    batch_bytes: int = 256 * 1024  # uncompressed JSON; the wire carries it gzipped
    queue_batches: int = 4  # batches anonymized ahead, in memory: the log holds the rest
    max_bytes_per_s: float | None = None
    timeout_s: float = 30.0
    max_attempts: int | None = 8  # per batch and run; None: until it gets through or stop
    backoff: Backoff = field(default_factory=Backoff)

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> SyncOptions:
        rate = settings.sync_max_kbps
        values: dict[str, Any] = {
            "batch_records": settings.sync_batch_records,
            "batch_bytes": settings.sync_batch_kb * 1024,
            "queue_batches": settings.sync_queue_batches,
            "max_bytes_per_s": rate * 1024 if rate else None,
            "timeout_s": settings.sync_timeout_s,
        }
        return cls(**(values | overrides))


@dataclass
class SyncReport:
    acknowledged: int = 0  # records the host confirmed (and that are now marked synced)
    stored: int = 0
    duplicates: int = 0  # records the host had from an earlier batch
    replayed: int = 0  # batches the host had already: a retry after a lost answer
    batches: int = 0
    retries: int = 0
    bytes_sent: int = 0
    held: dict[str, str] = field(default_factory=dict)  # record id -> why it stays behind


@dataclass
class _Batch:
    schemas: Mapping[str, wire.ToolSchemas]  # every tool set the client has looked up
    ids: list[str] = field(default_factory=list)
    parts: list[bytes] = field(default_factory=list)
    toolsets: list[str | None] = field(default_factory=list)  # per record: the one it names

    @cached_property
    def raw(self) -> bytes:
        named = {fp: self.schemas[fp] for fp in self.toolsets if fp is not None}
        return wire.batch_body(self.parts, wire.encode_toolsets(named))

    @cached_property
    def body(self) -> bytes:
        return wire.compress(self.raw)

    @cached_property
    def key(self) -> str:
        return wire.batch_key(self.raw)

    def add(self, record_id: str, part: bytes, toolset: str | None) -> None:
        self.ids.append(record_id)
        self.parts.append(part)
        self.toolsets.append(toolset)

    def subset(self, keep: Iterable[int]) -> _Batch:
        rows = list(keep)
        return _Batch(
            self.schemas,
            [self.ids[i] for i in rows],
            [self.parts[i] for i in rows],
            [self.toolsets[i] for i in rows],
        )


class _Retry(Exception):
    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after


class _TooLarge(Exception):
    pass


class _Invalid(Exception):
    def __init__(self, indices: list[int], reason: str) -> None:
        super().__init__(reason)
        self.indices = indices


class _Stopped(Exception):
    pass


class SyncClient:
    """Pushes a source's unsynced records to the enrolled host. One per thread."""

    def __init__(
        self,
        source: SyncSource,
        scrubber: Scrubber,
        enrollment: Enrollment,
        options: SyncOptions | None = None,
        *,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        stop: threading.Event | None = None,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.source, self.scrubber, self.enrollment = source, scrubber, enrollment
        self.options = options or SyncOptions()
        self._stop = stop or threading.Event()
        self._sleep, self._clock = sleep, clock
        self._rng = rng or random.Random()
        self._next_send = 0.0
        self._schemas: dict[str, wire.ToolSchemas] = {}
        self._schema_bytes: dict[str, int] = {}
        self._no_schemas: set[str] = set()
        limits = enrollment.host_limits
        self._max_records = min(self.options.batch_records, limits.max_batch_records)
        self._max_bytes = min(self.options.batch_bytes, limits.max_decoded_bytes)
        self.http = httpx.Client(
            base_url=base_url or enrollment.host_url,
            headers={"Authorization": f"Bearer {enrollment.credential}"},
            timeout=self.options.timeout_s,
            **(
                {"transport": transport}
                if transport
                else {"verify": pinned_context(enrollment.cert_pem)}
            ),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the run ------------------------------------------------------------------------------
    def sync(self) -> SyncReport:
        """Push every unsynced record. Raises a SyncError for what retrying cannot fix; what
        the host has not acknowledged stays unsynced for the next run."""
        report, previous = SyncReport(), None
        try:
            while batches := self._prepare(report.held):
                if batches[0].ids[0] == previous:  # acknowledged last round, yet unsynced
                    raise SyncError(
                        f"record {previous} stays unsynced after the host acknowledged it: "
                        "the log cannot mark records (run `edge-agent log verify`)"
                    )
                previous = batches[0].ids[0]
                for batch in batches:
                    self._push(batch, report)
        except _Stopped:
            log.info("sync stopped; %d records sent so far", report.acknowledged)
        return report

    def _prepare(self, held: dict[str, str]) -> list[_Batch]:
        """The next few batches, anonymized (bounded: queue_batches at most)."""
        want = self._max_records * self.options.queue_batches
        items = [i for i in self.source.unsynced(want + len(held)) if i.id not in held]
        encoded = []
        for item in items[:want]:
            clean = self._named_toolset(redact(item, self.scrubber))
            part, toolset = wire.encode_record(clean), clean.result.toolset
            need = len(part) + self._schema_bytes.get(toolset or "", 0) + _ENVELOPE_BYTES
            if need > self._max_bytes:
                held[item.id] = f"{need} bytes with its tool schemas: larger than a batch may be"
            else:
                encoded.append((item.id, part, toolset))
        return list(self._pack(encoded))

    def _named_toolset(self, item: Interaction) -> Interaction:
        """`item` naming its tool set only if the log still has the schemas (looked up once)."""
        fp = item.result.toolset
        if fp is None or fp in self._schemas:
            return item
        found = None
        if fp not in self._no_schemas and wire.TOOLSET.match(fp):
            found = self.source.toolset_schemas(fp)
        if found is None:
            if fp not in self._no_schemas:
                log.info("sync: no schemas for tool set %s; its records go without it", fp)
            self._no_schemas.add(fp)
            result = item.result.model_copy(update={"toolset": None})
            return item.model_copy(update={"result": result})
        self._schemas[fp] = schemas = list(found)
        self._schema_bytes[fp] = len(wire.encode_toolsets({fp: schemas}))
        return item

    def _pack(self, encoded: list[tuple[str, bytes, str | None]]) -> Iterator[_Batch]:
        batch, size = _Batch(self._schemas), _ENVELOPE_BYTES
        for record_id, part, toolset in encoded:
            more = len(part) + 1
            if toolset is not None and toolset not in batch.toolsets:
                more += self._schema_bytes[toolset] + _TOOLSET_BYTES
            if batch.ids and (len(batch.ids) >= self._max_records or size + more > self._max_bytes):
                yield batch
                batch, size = _Batch(self._schemas), _ENVELOPE_BYTES
                more = len(part) + 1 + self._schema_bytes.get(toolset or "", 0)
            batch.add(record_id, part, toolset)
            size += more
        if batch.ids:
            yield batch

    def _push(self, batch: _Batch, report: SyncReport) -> None:
        try:
            result = self._send(batch, report)
        except _TooLarge:
            if len(batch.ids) == 1:
                report.held[batch.ids[0]] = "the host refused it as too large (413)"
                return
            half = len(batch.ids) // 2  # bisect: the host's limit is below ours
            self._push(batch.subset(range(half)), report)
            self._push(batch.subset(range(half, len(batch.ids))), report)
            return
        except _Invalid as bad:
            report.held.update({batch.ids[i]: str(bad) for i in bad.indices})
            rest = batch.subset(i for i in range(len(batch.ids)) if i not in bad.indices)
            if rest.ids:
                self._push(rest, report)
            return
        self.source.mark_synced(batch.ids)
        report.batches += 1
        report.acknowledged += len(batch.ids)
        report.stored += result.stored
        report.duplicates += result.duplicates
        report.replayed += result.replayed

    # -- one batch ----------------------------------------------------------------------------
    def _send(self, batch: _Batch, report: SyncReport) -> wire.BatchResult:
        attempt = 0
        while True:
            self._pace(len(batch.body))
            try:
                return self._attempt(batch, report)
            except _Retry as retry:
                attempt += 1
                report.retries += 1
                limit = self.options.max_attempts
                if limit is not None and attempt >= limit:
                    raise HostUnreachableError(
                        f"{self.http.base_url} failed {attempt} times (last: {retry}); "
                        f"{len(batch.ids)} records stay unsynced for the next run"
                    ) from None
                jitter = self.options.backoff.delay(attempt - 1, self._rng)
                delay = min(max(retry.after or 0.0, jitter), self.options.backoff.cap_s)
                log.info("sync: %s; retrying in %.2f s", retry, delay)
                self._wait(delay)

    def _attempt(self, batch: _Batch, report: SyncReport) -> wire.BatchResult:
        headers = {
            wire.KEY_HEADER: batch.key,
            "Content-Encoding": "gzip",
            "Content-Type": "application/json",
        }
        try:
            response = self.http.post("/v1/batches", content=batch.body, headers=headers)
        except httpx.TransportError as exc:
            if pin_failed(exc):
                raise PinMismatchError(
                    f"{self.http.base_url} showed a certificate other than the one pinned at "
                    "enrollment; nothing was sent. If the host's certificate was replaced on "
                    "purpose, enroll again"
                ) from exc
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        report.bytes_sent += len(batch.body)
        return self._answer(response, batch)

    def _answer(self, response: httpx.Response, batch: _Batch) -> wire.BatchResult:
        status = response.status_code
        if status == 200:
            result = _result(response, batch)
            result.replayed = response.headers.get(wire.REPLAYED_HEADER) == "true"
            return result
        if status in (401, 403):
            raise EnrollmentError(
                f"the host refused this device's credential ({describe(response)}): "
                "run `edge-agent sync enroll` with a new token"
            )
        if status == 413:
            raise _TooLarge
        indices = _bad_records(response, len(batch.ids)) if status == 422 else []
        if indices:
            raise _Invalid(indices, f"the host refused it: {describe(response)}")
        if status in _RETRY_STATUSES or status >= 500:
            raise _Retry(describe(response), _retry_after(response))
        raise BatchRejectedError(
            f"the host refused batch {batch.key[:15]}: {describe(response)}; "
            f"its {len(batch.ids)} records stay on this device"
        )

    def _pace(self, nbytes: int) -> None:
        rate = self.options.max_bytes_per_s
        if not rate:
            return
        now = self._clock()
        if self._next_send > now:
            self._wait(self._next_send - now)
        self._next_send = max(now, self._next_send) + nbytes / rate

    def _wait(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            self._stop.wait(seconds)
        if self._stop.is_set():
            raise _Stopped


def _result(response: httpx.Response, batch: _Batch) -> wire.BatchResult:
    try:
        result = wire.BatchResult.model_validate_json(response.content)
    except ValidationError as exc:
        raise _Retry(f"unreadable answer: {exc.errors()[0]['msg']}") from exc
    if result.key != batch.key or result.received != len(batch.ids):
        raise BatchRejectedError(
            f"the host answered for another batch ({result.key[:15]}, {result.received} "
            f"records) than the one sent ({batch.key[:15]}, {len(batch.ids)}): is a proxy "
            "caching POSTs?"
        )
    return result


def _bad_records(response: httpx.Response, count: int) -> list[int]:
    """The indices of the records the host named as failing its schema, if it named any."""
    try:
        indices = response.json().get("records") or []
    except ValueError:
        return []
    if not all(isinstance(i, int) and 0 <= i < count for i in indices):
        return []
    return sorted(set(indices))


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None  # an HTTP date: the backoff is good enough


def open_client(
    settings: Any,
    source: SyncSource,
    *,
    scrubber: Scrubber,
    stop: threading.Event | None = None,
) -> SyncClient:
    """The client the settings describe; refuses unless sync is enabled and enrolled."""
    if not settings.sync_enabled:
        raise SyncError(
            "sync is off: nothing leaves this device until you set sync_enabled = true "
            "(config.toml or EDGE_AGENT_SYNC_ENABLED=1) after `edge-agent sync enroll`"
        )
    enrollment = Enrollment.load(settings.enrollment_path)
    if enrollment.expires_at < time.time():
        raise EnrollmentError("this device's sync credential has expired: enroll again")
    return SyncClient(
        source,
        scrubber,
        enrollment,
        SyncOptions.from_settings(settings),
        base_url=settings.sync_host_url,
        stop=stop,
    )


def device_anonymizer(settings: Any, keep: Iterable[str]) -> Scrubber:
    """The same anonymizer `edge-agent anonymize` shows: what it prints is what is synced.
    `keep`: the words the skills need readable (`edge_agent.skills.keep_words`)."""
    from edge_agent.anonymize import Anonymizer, device_secret

    return Anonymizer(device_secret(settings.config_dir), keep)
