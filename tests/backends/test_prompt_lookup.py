"""Prompt-lookup drafts: what is guessed from the prompt, and the backend checking guesses.

Guess tests need no model. Backend tests run on the tiny random llama with guesses set by
the test (the model's own next tokens, or tokens it would never pick), so that verification
is exercised whatever a random model writes; the `integration` test copies a sentence with
SmolLM2-135M, where real guesses come from the prompt.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent.backends import GenerationRequest
from edge_agent.backends._prompt_lookup import PromptLookup, continuation
from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.types import Message
from tests.backends.support import SCHEMA, smollm2_path
from tests.tinymodel import TinyModel

SOURCE = "set Overhead Light brightness to 100%\n\nDevices:\n- Sliding Door (cover): open"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ('{"name": "Sl', "iding Door"),  # a word started after a quote, up to punctuation
        ('"brightness": 1', "00"),  # digits copied from the request
        ('{"name": "Over', "head Light brightness to 100"),
        ('"name": "HassTurn', ""),  # "urn" is inside a word here: no guess
        ('{"', ""),  # punctuation alone predicts nothing
        ("", ""),
    ],
)
def test_continuation_copies_after_a_word_shared_with_the_prompt(
    written: str, expected: str
) -> None:
    assert continuation(SOURCE, written) == expected


def test_a_long_match_is_trusted_even_inside_a_word() -> None:
    earlier = 'before\n{"name": "HassTurnOff", "arguments": {"domain": "light"}}\nafter'
    assert continuation(earlier, '{"name": "HassTurn') == 'Off", "arguments": {"domain": "light"}}'


def test_the_last_occurrence_wins_and_the_guess_ends_with_its_line() -> None:
    source = "Kitchen Light\nKitchen Fan (fan)\nhere: Kitchen Fan (fan) on"
    assert continuation(source, '"Kitchen') == " Fan"
    assert continuation(source, "here: Kitchen") == " Fan (fan) on"


def test_the_drafter_caps_its_guess_and_counts_it() -> None:
    lookup = PromptLookup(SOURCE, list, max_tokens=3)
    lookup.observe('{"name": ')
    lookup.observe('"Sl')
    assert lookup.propose(10) == list(b"idi") and lookup.proposed == 3  # of "iding Door"
    assert lookup.propose(0) == []


# -- the llama.cpp backend checking guesses (tiny random model) ------------------------------


@pytest.fixture
def tiny(tiny_model: TinyModel) -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(tiny_model.gguf_path, n_ctx=512, n_threads=1, draft_tokens=3)
    yield backend
    backend.close()


def ask(text: str, **kwargs: Any) -> GenerationRequest:
    return GenerationRequest(messages=[Message(role="user", content=text)], **kwargs)


def guess_with(monkeypatch: pytest.MonkeyPatch, guess: Any) -> list[tuple[int, ...]]:
    """Make every draft ``guess(lookup, limit)``; returns the batches the backend evaluated."""
    batches: list[tuple[int, ...]] = []
    for name in ("_eval", "_eval_outputs"):
        original = getattr(LlamaCppBackend, name)

        def spy(self: Any, tokens: Any, *rest: Any, _original: Any = original) -> None:
            batches.append(tuple(tokens))
            _original(self, tokens, *rest)

        monkeypatch.setattr(LlamaCppBackend, name, spy)
    monkeypatch.setattr(PromptLookup, "propose", guess)
    return batches


def plain(backend: LlamaCppBackend, request: GenerationRequest) -> Any:
    backend.draft_tokens = 0
    try:
        return backend.complete(request)
    finally:
        backend.draft_tokens = 3


@pytest.mark.parametrize("schema", [None, SCHEMA])
def test_right_guesses_are_kept_and_save_decode_steps(
    tiny: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch, schema: Any
) -> None:
    request = ask("copy this text please", max_tokens=24, json_schema=schema, logprobs=True)
    expected = plain(tiny, request)
    tiny.clear_cache()
    produced = _count_tokens(monkeypatch)

    def oracle(lookup: PromptLookup, limit: int) -> list[int]:  # the model's own next tokens
        done = sum(produced)
        return list(expected.token_ids[done : done + min(limit, 3)])

    batches = guess_with(monkeypatch, oracle)
    drafted = tiny.complete(request)
    assert drafted.token_ids == expected.token_ids and drafted.text == expected.text
    assert drafted.logprobs == pytest.approx(expected.logprobs, abs=1e-3)
    assert len(batches) < len(expected.token_ids) - 3, batches  # fewer llama_decode calls


def test_wrong_guesses_change_nothing(
    tiny: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = ask("copy this text please", max_tokens=16)
    expected = plain(tiny, request)
    tiny.clear_cache()
    eos = tiny._llama.token_eos()
    wrong = [t for t in range(5, 40) if t not in expected.token_ids and t != eos][:3]
    guess_with(monkeypatch, lambda lookup, limit: wrong[:limit])
    assert tiny.complete(request).token_ids == expected.token_ids


def test_the_cache_after_checked_guesses_serves_the_next_request(
    tiny: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rejected guesses leave no KV behind: a follow-up sharing the prefix decodes as on a
    fresh cache."""
    first = ask("copy this text please", max_tokens=12)
    follow = GenerationRequest(
        messages=[*first.messages, Message(role="assistant", content="ok"),
                  Message(role="user", content="again")],
        max_tokens=12,
    )  # fmt: skip
    expected = plain(tiny, follow)
    tiny.clear_cache()
    guess_with(monkeypatch, lambda lookup, limit: [7, 8, 9][:limit])
    tiny.complete(first)
    again = tiny.complete(follow)
    assert again.usage.cached_prompt_tokens > 0 and again.token_ids == expected.token_ids


def test_sampling_at_a_temperature_never_guesses(
    tiny: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []
    guess_with(monkeypatch, lambda lookup, limit: asked.append(limit) or [])
    tiny.complete(ask("copy this text please", max_tokens=8, temperature=0.7, seed=1))
    assert asked == []
    tiny.complete(ask("copy this text please", max_tokens=8))
    assert asked


def test_guessing_is_off_unless_asked(
    tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []
    guess_with(monkeypatch, lambda lookup, limit: asked.append(limit) or [])
    with LlamaCppBackend(tiny_model.gguf_path, n_ctx=256, n_threads=1) as backend:
        backend.complete(ask("copy this text please", max_tokens=8))
    assert asked == []


def _count_tokens(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Tokens each decode step produced, as the backend hands them to the decode loop."""
    counts: list[int] = []
    original = LlamaCppBackend._step

    def step(self: Any, run: Any, budget: int) -> Any:
        produced = original(self, run, budget)
        counts.append(len(produced.tokens) if produced is not None else 0)
        return produced

    monkeypatch.setattr(LlamaCppBackend, "_step", step)
    return counts


# -- SmolLM2-135M copying a sentence (integration) -------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> Iterator[LlamaCppBackend]:
    path = smollm2_path()
    backend = LlamaCppBackend(path, n_ctx=1024, n_threads=1, draft_tokens=3)
    yield backend
    backend.close()


@pytest.mark.integration
def test_smollm2_copies_a_sentence_in_fewer_decode_steps(
    smollm2: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "the quick brown fox jumps over the lazy dog near the river bank"
    request = ask(f"Repeat exactly, nothing else: {text}", max_tokens=24)
    expected = plain(smollm2, request)
    smollm2.clear_cache()
    batches: list[int] = []
    original = LlamaCppBackend._eval_outputs

    def spy(self: Any, tokens: Any, n_out: int) -> None:
        batches.append(n_out)
        original(self, tokens, n_out)

    monkeypatch.setattr(LlamaCppBackend, "_eval_outputs", spy)
    drafted = smollm2.complete(request)
    assert "quick brown fox" in expected.text
    assert drafted.text == expected.text
    assert batches and drafted.usage.completion_tokens > 2 * len(batches)
