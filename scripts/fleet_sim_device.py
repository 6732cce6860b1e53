"""The fleet simulator's devices (scripts/fleet_sim.py): real enrollment, the sync client's own
batches, and its retry rules, sent over asyncio + httpx.AsyncClient.

The sync client is synchronous (one thread per device), so a simulated device borrows its
code paths rather than re-implementing the protocol: `SyncClient._prepare` builds the
batches (redaction, canonical JSON, gzip, the idempotency key: a hash of the batch's bytes),
`SyncClient._answer` sorts each answer into done / retry / refused, and `Backoff.delay` is the
jitter between attempts. Only the send itself is async here, with the client's headers."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from edge_agent.errors import HostUnreachableError
from edge_agent.sync import (
    Backoff,
    Enrollment,
    SyncClient,
    SyncOptions,
    enroll,
    pinned_context,
    wire,
)
from edge_agent.sync import client as sync_client
from edge_agent.tools import fingerprint
from tests.sync_support import THERMOSTAT, MaskAt, MemorySource, make_interaction, thermostat_turn


@dataclass(frozen=True)
class Batch:
    """What a device keeps of a prepared batch: its records' ids, key and gzipped body (the
    fields `SyncClient._answer` reads)."""

    ids: list[str]
    key: str
    body: bytes


@dataclass
class Tally:
    """What the devices saw, all together."""

    latencies: list[float] = field(default_factory=list)  # first send to acknowledgement, s
    statuses: dict[int, int] = field(default_factory=dict)
    retries: int = 0
    resent: int = 0  # acknowledged batches sent again with the same key (a crash before marking)
    replays_wrong: int = 0  # a resend answered with another result than the first
    failed: dict[str, int] = field(default_factory=dict)  # device -> batches given up on

    @property
    def errors_5xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def device_records(index: int, count: int) -> list[Any]:
    """A device's turns: half the home skill, half a user's thermostat skill (its tool set's
    schemas travel in the batch), numbered apart from every other device's."""
    first = index * count
    return [
        make_interaction(i) if i % 2 == 0 else thermostat_turn(i)
        for i in range(first, first + count)
    ]


def prepare(enrollment: Enrollment, records: Sequence[Any], batch_records: int) -> list[Batch]:
    """The batches a device's sync client sends for `records`, in order."""
    source = MemorySource(records, {fingerprint(THERMOSTAT): THERMOSTAT})
    # MaskAt: a stand-in scrubber (the anonymizer has its own benchmark); this is transport
    client = SyncClient(source, MaskAt(), enrollment, SyncOptions(batch_records=batch_records))
    client.close()  # its HTTP client is never used: the sends are async
    batches: list[Batch] = []
    while prepared := client._prepare({}):
        for b in prepared:
            batches.append(Batch(list(b.ids), b.key, b.body))
            source.mark_synced(b.ids)
    return batches


async def enroll_all(url: str, tokens: Sequence[str], pin: str, parallel: int = 8) -> list[Any]:
    """Every device enrolls with its own one-time token (the device's `enroll`, in threads)."""
    gate = asyncio.Semaphore(parallel)

    async def one(token: str) -> Enrollment:
        async with gate:
            return await asyncio.to_thread(enroll, url, token, pin=pin)

    return list(await asyncio.gather(*(one(t) for t in tokens)))


@dataclass
class Pusher:
    """Pushes each device's batches through `url` (the fault proxy) as its sync client would."""

    url: str
    tally: Tally
    backoff: Backoff
    resend_rate: float = 0.0  # the share of acknowledged batches sent again
    max_attempts: int | None = 8  # the device's default, per batch and run
    timeout_s: float = 30.0  # the device's default
    rng: random.Random = field(default_factory=lambda: random.Random(17))
    acknowledged: dict[str, set[str]] = field(default_factory=dict)
    answers: _Answers | None = None

    async def device(self, enrollment: Enrollment, batches: Sequence[Batch]) -> None:
        if self.answers is None:
            self.answers = _Answers(enrollment)
        answers = self.answers
        async with httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {enrollment.credential}"},
            timeout=self.timeout_s,
            verify=pinned_context(enrollment.cert_pem),  # the host's certificate, pinned
        ) as http:
            done = self.acknowledged.setdefault(enrollment.device_id, set())
            for batch in batches:
                try:
                    result = await self._send(http, answers, batch)
                except HostUnreachableError:  # its records stay on the device for the next run
                    failed = self.tally.failed
                    failed[enrollment.device_id] = failed.get(enrollment.device_id, 0) + 1
                    continue
                done.update(batch.ids)
                if self.rng.random() < self.resend_rate:
                    await self._resend(http, answers, batch, result)

    async def _send(
        self, http: httpx.AsyncClient, answers: _Answers, batch: Batch, *, timed: bool = True
    ) -> Any:
        started, attempt = time.perf_counter(), 0
        while True:
            try:
                result = answers.read(await self._post(http, batch), batch)
                if timed:  # a resend's quick replay is not a batch's latency
                    self.tally.latencies.append(time.perf_counter() - started)
                return result
            except sync_client._Retry as retry:
                attempt += 1
                self.tally.retries += 1
                if self.max_attempts is not None and attempt >= self.max_attempts:
                    raise HostUnreachableError(f"{attempt} attempts, last: {retry}") from None
                jitter = self.backoff.delay(attempt - 1, self.rng)
                await asyncio.sleep(min(max(retry.after or 0.0, jitter), self.backoff.cap_s))

    async def _post(self, http: httpx.AsyncClient, batch: Batch) -> httpx.Response:
        headers = {
            wire.KEY_HEADER: batch.key,
            "Content-Encoding": "gzip",
            "Content-Type": "application/json",
        }
        try:
            response = await http.post("/v1/batches", content=batch.body, headers=headers)
        except httpx.TransportError as exc:  # a dropped or cut connection: the device retries
            raise sync_client._Retry(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        self.tally.statuses[status] = self.tally.statuses.get(status, 0) + 1
        return response

    async def _resend(
        self, http: httpx.AsyncClient, answers: _Answers, batch: Batch, first: Any
    ) -> None:
        """The same batch again, same key: the host must replay its first answer."""
        self.tally.resent += 1
        again = await self._send(http, answers, batch, timed=False)
        if not again.replayed or (again.stored, again.received) != (first.stored, first.received):
            self.tally.replays_wrong += 1


class _Answers:
    """The sync client's reading of an answer (status, body checked against the batch)."""

    def __init__(self, enrollment: Enrollment) -> None:
        self.client = SyncClient(MemorySource([]), MaskAt(), enrollment)
        self.client.close()

    def read(self, response: httpx.Response, batch: Batch) -> Any:
        return self.client._answer(response, batch)  # type: ignore[arg-type]
