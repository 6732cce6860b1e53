"""Sync in the background of a running agent (`edge-agent serve`, `edge-agent sync`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from edge_agent.errors import SyncError
from edge_agent.sync.client import Scrubber, SyncClient, SyncReport, SyncSource, open_client
from edge_agent.sync.enrollment import Enrollment

log = logging.getLogger(__name__)

ClientFactory = Callable[[threading.Event], SyncClient]
# Runs after each push with the same authenticated, pinned client: the adapter pull goes here.
SyncTask = Callable[[SyncClient], object]


class SyncWorker:
    """Syncs every `interval_s` (or at once after ``kick()``) from a daemon thread. A round
    that fails is logged and kept in ``last_error``; the next round starts afresh."""

    def __init__(
        self, make_client: ClientFactory, interval_s: float, *, tasks: Sequence[SyncTask] = ()
    ) -> None:
        self._make = make_client
        self.interval_s = interval_s
        self.tasks = list(tasks)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self.last_report: SyncReport | None = None
        self.last_error: BaseException | None = None

    def start(self) -> SyncWorker:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edge-agent-sync", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the request in flight (if any); what it carried is resent next time."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def kick(self) -> None:
        """Sync now instead of at the end of the interval."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._round()
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def _round(self) -> None:
        try:
            with self._make(self._stop) as client:
                self.last_report = client.sync()
                for task in self.tasks:
                    if not self._stop.is_set():
                        task(client)
            self.last_error = None
        except SyncError as exc:
            self.last_error = exc
            log.warning("sync: %s", exc)
        except Exception as exc:  # the thread must outlive any one round
            self.last_error = exc
            log.exception("sync round failed")
        finally:
            self.rounds += 1


def worker_for(
    settings: Any, source: SyncSource, scrubber: Scrubber, *, tasks: Sequence[SyncTask] = ()
) -> SyncWorker | None:
    """The background sync of `edge-agent serve`, or None when sync is off or the device is
    not enrolled (a warning says so). The source must be thread-safe (LogStore is)."""
    if not settings.sync_enabled:
        return None
    try:
        Enrollment.load(settings.enrollment_path)
    except SyncError as exc:
        log.warning("sync_enabled is set but %s", exc)
        return None
    return SyncWorker(
        lambda stop: open_client(settings, source, scrubber=scrubber, stop=stop),
        settings.sync_interval_s,
        tasks=tasks,
    )
