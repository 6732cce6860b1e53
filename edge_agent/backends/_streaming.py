"""What every backend's decode loop shares: first-token timing, stop-string scanning and
log-probabilities."""

from __future__ import annotations

import time

import numpy as np

from edge_agent.backends.base import Timings


class Clock:
    def __init__(self, started: float) -> None:
        self._started = started
        self._first: float | None = None

    def first_token(self) -> None:
        if self._first is None:
            self._first = time.perf_counter()

    def done(self) -> Timings:
        now = time.perf_counter()
        first = self._first or now
        first_ms = (first - self._started) * 1000
        decode_ms = (now - first) * 1000
        return Timings(prompt_ms=first_ms, decode_ms=decode_ms, first_token_ms=first_ms)


class StopScanner:
    """Holds back text that could be the start of a stop string until it is decided."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._held, self.stopped = "", True
            return buf[: min(hits)], True
        keep = max(overlap(buf, s) for s in self._stops)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0


def log_softmax_at(logits: np.ndarray, token: int, scratch: np.ndarray | None = None) -> float:
    """log p(token) under softmax(logits), the raw model's; ``scratch`` (float32, the logits'
    shape) saves an allocation per token."""
    top = float(logits.max())
    shifted = np.subtract(logits, top, out=scratch)
    return float(logits[token]) - top - float(np.log(np.exp(shifted, out=shifted).sum()))
