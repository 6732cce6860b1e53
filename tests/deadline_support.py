"""A turn's clock that moves only when a test says so, and a scripted model that takes time on
it: deadline tests without sleeping (no timed assertions)."""

from __future__ import annotations

from collections.abc import Iterator

from edge_agent.backends.base import Chunk, GenerationRequest
from edge_agent.backends.fake import ScriptedBackend


class FakeClock:
    """The turn's clock (``Agent(clock=...)``): seconds pass only when a test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SlowModel(ScriptedBackend):
    """ScriptedBackend (the test seam) whose every generation takes ``seconds`` on ``clock``."""

    def __init__(self, responses: list[str], clock: FakeClock, seconds: float) -> None:
        super().__init__(responses)
        self.clock, self.seconds = clock, seconds

    def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
        self.clock.now += self.seconds
        yield from super().generate(request)
