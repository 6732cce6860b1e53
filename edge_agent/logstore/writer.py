"""Group commit: callers hand records to one writer thread and wait for their commit."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

from edge_agent.errors import LogError
from edge_agent.logstore.store import LogStore, Pending
from edge_agent.logstore.toolsets import Schemas
from edge_agent.types import AgentResult, Message

_STOP = object()


class BatchWriter:
    """Whatever queued up while the previous transaction committed goes into the next one,
    so throughput grows with load and an idle log adds no delay. A future resolves to the
    record id only after its transaction committed (or to the LogError that stopped it)."""

    def __init__(self, store: LogStore, *, max_batch: int = 1024):
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(
        self,
        result: AgentResult,
        messages: Sequence[Message] | None = None,
        tools: Schemas | None = None,
    ) -> Future[str]:
        if self._closed:
            raise LogError("the log writer is closed")
        future: Future[str] = Future()
        self._queue.put((Pending(result, messages or (), time.time(), tools), future))
        return future

    def record(
        self,
        result: AgentResult,
        messages: Sequence[Message] | None = None,
        tools: Schemas | None = None,
    ) -> str:
        """Like LogStore.record, but committed together with other threads' records."""
        return self.submit(result, messages, tools).result()

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._take()
            if batch:
                self._commit(batch)

    def _take(self) -> tuple[list[tuple[Pending, Future[str]]], bool]:
        item = self._queue.get()
        batch: list[tuple[Pending, Future[str]]] = []
        while item is not _STOP:
            batch.append(item)  # type: ignore[arg-type]
            if len(batch) >= self.max_batch or self._queue.empty():
                return batch, False
            item = self._queue.get()
        return batch, True

    def _commit(self, batch: list[tuple[Pending, Future[str]]]) -> None:
        try:
            ids = self.store.write([pending for pending, _ in batch])
        except Exception as exc:  # every caller in the batch learns why
            for _, future in batch:
                future.set_exception(exc)
            return
        for record_id, (_, future) in zip(ids, batch, strict=True):
            future.set_result(record_id)
