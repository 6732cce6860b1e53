"""A turn's time bound (``AgentConfig.turn_deadline_s``).

One deadline covers a whole `Agent.run`: every generation, repair and tool call of it, and
every step of a compound command. The agent checks it before each generation and before each
tool call (a call that already ran is never undone or run again), and hands it to the backend
as an instant on ``time.monotonic()``, the one clock a decode loop reads, so a generation stops
between two tokens (``Done.finish_reason == "deadline"``). The turn's own clock is injectable,
so tests can move time without sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from edge_agent.types import AgentResult

Clock = Callable[[], float]


class Deadline:
    """``seconds`` from now on ``clock``; None: no bound."""

    def __init__(self, seconds: float | None, clock: Clock = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.started = clock()

    def remaining(self) -> float:
        """Seconds left (negative once passed); infinite without a bound."""
        if self.seconds is None:
            return math.inf
        return self.seconds - (self.clock() - self.started)

    @property
    def passed(self) -> bool:
        return self.remaining() <= 0

    def monotonic(self) -> float | None:
        """The same instant on ``time.monotonic()``, as ``GenerationRequest.deadline``."""
        return None if self.seconds is None else time.monotonic() + self.remaining()

    def expire(self, result: AgentResult) -> bool:
        """End the turn as timed out once the deadline passed; True when it did."""
        if not self.passed:
            return False
        self.end(result)
        return True

    def end(self, result: AgentResult) -> None:
        """Mark the turn timed out (a backend stopped decoding at the deadline)."""
        result.outcome = "timeout"
        result.error = self.message()

    def message(self) -> str:
        ran = self.clock() - self.started
        return (
            f"the turn ran {ran:.1f} s, past its deadline of {self.seconds:g} s; raise "
            "turn_deadline_s (config.toml or EDGE_AGENT_TURN_DEADLINE_S) for a slower "
            "model or device"
        )
