"""GenerationRequest.deadline in the shared decode loop, on real llama.cpp (the tiny llama):
decoding stops between tokens once the deadline passes and the stream still ends in a Done."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.backends import _prompted
from edge_agent.backends.base import Done
from edge_agent.backends.llama_cpp import LlamaCppBackend
from tests.backends.support import SCHEMA, ask
from tests.tinymodel import TinyModel


@pytest.fixture(scope="module")
def tiny(tiny_model: TinyModel) -> Iterator[LlamaCppBackend]:
    with LlamaCppBackend(Path(tiny_model.gguf_path), n_ctx=512, n_threads=2) as backend:
        yield backend


class Ticks:
    """The decode loop's clock (``_prompted.monotonic``): one second per reading, so the
    deadline passes after a known number of tokens whatever the machine's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_a_deadline_already_passed_yields_no_token_and_a_deadline_done(
    tiny: LlamaCppBackend,
) -> None:
    chunks = list(tiny.generate(ask("hello", max_tokens=20, deadline=time.monotonic() - 1)))
    [done] = chunks
    assert isinstance(done, Done) and done.finish_reason == "deadline"
    assert done.usage.completion_tokens == 0 and done.usage.prompt_tokens > 0


def test_decoding_stops_between_tokens_once_the_deadline_passes(
    tiny: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = tiny.complete(ask("hello", max_tokens=20))
    assert full.usage.completion_tokens > 3, "pick a prompt the tiny model answers at length"
    monkeypatch.setattr(_prompted, "monotonic", Ticks())
    cut = tiny.complete(ask("hello", max_tokens=20, deadline=2.5))  # two steps, then stop
    assert cut.finish_reason == "deadline"
    assert 0 < len(cut.token_ids) < full.usage.completion_tokens
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)]
    assert cut.usage.completion_tokens == len(cut.token_ids)
    # the next request without a deadline is whole again: nothing was left half-decoded
    monkeypatch.undo()
    assert tiny.complete(ask("hello", max_tokens=20)).token_ids == full.token_ids


def test_a_schema_constrained_generation_stops_at_the_deadline_too(
    tiny: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_prompted, "monotonic", Ticks())
    cut = tiny.complete(ask("pick", max_tokens=64, json_schema=SCHEMA, deadline=1.5))
    assert cut.finish_reason == "deadline"
    whole = tiny.complete(ask("pick", max_tokens=64, json_schema=SCHEMA))
    assert 0 < len(cut.token_ids) < len(whole.token_ids)
    assert cut.token_ids == whole.token_ids[: len(cut.token_ids)]
