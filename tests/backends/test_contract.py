"""The backend contract, one suite over every backend the agent can be given.

Each test runs on the scripted fake, on llama.cpp with the tiny GGUF and on onnxruntime-genai
with the tiny ONNX folder (the same random llama, tests/tinymodel.py), each opened by kind
through the registry, fresh per test. ``prompted`` tests run on the two real backends only:
they render the model's chat template, hold a context window and a prefix cache, and check
that a stream stops when the backend is closed under it. What the engines do differently
(logprob provenance, grammars, adapter formats, load errors) stays in their own test files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_agent.backends import Backend, Chunk, Done, GenerationRequest, open_backend
from edge_agent.backends._prompted import PromptedBackend
from edge_agent.errors import AdapterError, BackendError, ContextLengthError
from edge_agent.models.gguf import BaseModelIdentity
from edge_agent.types import Message
from tests.backends.support import SCHEMA, ask, check_schema_output, random_lora
from tests.backends.test_onnx import build_tiny_onnx
from tests.tinymodel import TinyModel

# The fake answers this to every request: valid for SCHEMA, four "tokens" (words).
SCRIPT = '{"color": "green", "count": 3}'
SYSTEM = "You are a helpful assistant. " * 8


@dataclass(frozen=True)
class Traits:
    """What a backend does beyond the bare contract."""

    caches_prefix: bool  # reports reused prompt tokens in usage.cached_prompt_tokens
    applies_adapters: bool  # an adapter changes the model's output


TRAITS = {
    "fake": Traits(caches_prefix=False, applies_adapters=False),
    "llama_cpp": Traits(caches_prefix=True, applies_adapters=True),
    "onnx": Traits(caches_prefix=True, applies_adapters=True),
}
PROMPTED = ["llama_cpp", "onnx"]

Opener = Callable[..., Any]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel) -> Path:
    return build_tiny_onnx(tmp_path_factory.getbasetemp() / "onnx", tiny_model)


@pytest.fixture
def opener(request: pytest.FixtureRequest) -> Iterator[Opener]:
    """Opens a backend of a kind through the registry (options override the defaults) and
    closes whatever it opened at teardown."""
    opened: list[Backend] = []

    def open_kind(kind: str, **overrides: Any) -> Any:
        backend = open_backend(kind, **(_defaults(kind, request) | overrides))
        opened.append(backend)
        return backend

    yield open_kind
    for backend in opened:
        backend.close()


def _defaults(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "fake":
        return {"responses": [SCRIPT] * 32}
    if kind == "llama_cpp":
        path = request.getfixturevalue("tiny_model").gguf_path
        return {"model_path": path, "n_ctx": 512, "n_threads": 2}
    # Looked up only here, so that selecting the other kinds never builds the ONNX model.
    return {"model_path": request.getfixturevalue("tiny_onnx"), "n_ctx": 256, "n_threads": 1}


@pytest.fixture(params=list(TRAITS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(kind: str, opener: Opener) -> Backend:
    opened: Backend = opener(kind)
    return opened


@pytest.fixture(params=PROMPTED)
def prompted_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def prompted(prompted_kind: str, opener: Opener) -> PromptedBackend[Any]:
    opened: PromptedBackend[Any] = opener(prompted_kind)
    return opened


@pytest.fixture
def lora(identity: BaseModelIdentity, tmp_path: Path) -> Path:
    return random_lora(identity, tmp_path / "lora.gguf", seed=1)


def texts(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


# --- streaming -------------------------------------------------------------------------------


def test_streams_text_chunks_then_one_done(backend: Backend) -> None:
    chunks = list(backend.generate(ask("hello", max_tokens=8)))
    *body, done = chunks
    assert isinstance(done, Done)
    assert body and not any(isinstance(c, Done) for c in body)
    assert all(c.token_ids for c in body)  # a chunk is never empty
    assert texts(chunks).strip()
    assert done.usage.completion_tokens == sum(len(c.token_ids) for c in chunks) <= 8
    assert all(c.logprobs == () for c in chunks)  # not asked for


def test_chunks_join_to_the_completion(backend: Backend) -> None:
    request = ask("hello", max_tokens=12, logprobs=True)
    chunks = list(backend.generate(request))
    done = chunks[-1]
    assert isinstance(done, Done)
    completion = backend.complete(request)  # greedy: the same answer again
    assert texts(chunks) == completion.text
    assert tuple(t for c in chunks for t in c.token_ids) == completion.token_ids
    streamed = [lp for c in chunks for lp in c.logprobs]
    assert streamed == pytest.approx(list(completion.logprobs), abs=1e-3)
    assert done.finish_reason == completion.finish_reason
    assert done.usage.completion_tokens == completion.usage.completion_tokens
    assert done.usage.prompt_tokens == completion.usage.prompt_tokens


def test_greedy_and_seeded_sampling_repeat(backend: Backend) -> None:
    greedy = [backend.complete(ask("the weather", max_tokens=12)) for _ in range(2)]
    assert greedy[0].token_ids == greedy[1].token_ids and greedy[0].text == greedy[1].text
    request = ask("the weather", max_tokens=12, temperature=1.0, seed=7)
    sampled = [backend.complete(request) for _ in range(2)]
    assert sampled[0].token_ids == sampled[1].token_ids


# --- limits: stop strings, max_tokens --------------------------------------------------------


def test_stop_string_cuts_the_answer_before_it(backend: Backend) -> None:
    full = backend.complete(ask("hello", max_tokens=20))
    pair = re.search(r"[A-Za-z0-9]{2}", full.text[1:])
    assert pair, f"no stop string to pick in {full.text!r}: pick another prompt"
    stop = pair.group()
    cut = full.text.find(stop)
    stopped = backend.complete(ask("hello", max_tokens=20, stop=["never\x00", stop]))
    assert stopped.text == full.text[:cut] and stop not in stopped.text
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == full.token_ids[: len(stopped.token_ids)]
    assert stopped.usage.completion_tokens == len(stopped.token_ids)


def test_a_stop_string_that_never_comes_changes_nothing(backend: Backend) -> None:
    full = backend.complete(ask("hello", max_tokens=20))
    same = backend.complete(ask("hello", max_tokens=20, stop=["never\x00"]))
    assert (same.text, same.token_ids, same.finish_reason) == (
        full.text,
        full.token_ids,
        full.finish_reason,
    )


def test_max_tokens_ends_the_answer_with_length(backend: Backend) -> None:
    full = backend.complete(ask("hello", max_tokens=20))
    n = full.usage.completion_tokens
    assert 3 < n <= 20 and full.finish_reason == ("length" if n == 20 else "stop")
    short = backend.complete(ask("hello", max_tokens=3))
    assert short.finish_reason == "length"
    assert short.usage.completion_tokens == len(short.token_ids) == 3
    assert short.token_ids == full.token_ids[:3]


def test_max_tokens_holds_when_the_schema_forces_several_tokens(backend: Backend) -> None:
    short = backend.complete(ask("pick", max_tokens=3, json_schema=SCHEMA))
    assert short.finish_reason == "length"
    assert short.usage.completion_tokens == len(short.token_ids) == 3


# --- JSON schema, logprobs, usage ------------------------------------------------------------


def test_json_schema_output_parses_and_validates(backend: Backend) -> None:
    greedy = [ask(word, max_tokens=40, json_schema=SCHEMA) for word in ("one", "two", "three")]
    sampled = [ask("pick", json_schema=SCHEMA, temperature=1.0, seed=s) for s in range(3)]
    for request in greedy + sampled:  # greedy ones reuse a cached, once-constrained prefix
        done = backend.complete(request)
        check_schema_output(done.text)
        assert done.finish_reason == "stop"


def test_logprobs_one_per_token_when_asked(backend: Backend) -> None:
    for request in (ask("hello", max_tokens=8), ask("pick", max_tokens=40, json_schema=SCHEMA)):
        scored = backend.complete(request.model_copy(update={"logprobs": True}))
        assert len(scored.logprobs) == len(scored.token_ids) > 0
        assert all(math.isfinite(lp) and lp <= 0.0 for lp in scored.logprobs)
        assert backend.complete(request).logprobs == ()


def test_usage_and_timings(backend: Backend) -> None:
    done = backend.complete(ask("hello", max_tokens=8))
    assert done.usage.prompt_tokens > 0
    assert done.usage.completion_tokens == len(done.token_ids) > 0
    assert 0 <= done.usage.cached_prompt_tokens <= done.usage.prompt_tokens
    timings = done.timings
    assert min(timings.prompt_ms, timings.decode_ms, timings.first_token_ms) >= 0.0


def test_a_repeated_prompt_prefix_is_reported_cached(backend: Backend, kind: str) -> None:
    first = backend.complete(ask("first question", system=SYSTEM, max_tokens=4))
    second = backend.complete(ask("second one", system=SYSTEM, max_tokens=4))
    again = backend.complete(ask("second one", system=SYSTEM, max_tokens=4))
    assert first.usage.cached_prompt_tokens == 0
    assert again.token_ids == second.token_ids
    if not TRAITS[kind].caches_prefix:
        assert second.usage.cached_prompt_tokens == again.usage.cached_prompt_tokens == 0
        return
    assert 0 < second.usage.cached_prompt_tokens < second.usage.prompt_tokens
    # The same prompt again keeps all but its last token: its logits pick the first answer.
    assert again.usage.cached_prompt_tokens == again.usage.prompt_tokens - 1


# --- adapters, closing -----------------------------------------------------------------------


def test_an_unknown_adapter_is_refused(backend: Backend) -> None:
    assert backend.active_adapter is None
    backend.use_adapter(None)
    with pytest.raises(AdapterError, match="no adapter named 'missing'"):
        backend.use_adapter("missing")
    assert backend.active_adapter is None


def test_adapters_load_switch_and_switch_back(backend: Backend, kind: str, lora: Path) -> None:
    request = ask("question", system=SYSTEM, max_tokens=8, logprobs=True)
    base = backend.complete(request)
    backend.load_adapter("tone", lora)
    assert backend.active_adapter is None  # loading does not switch
    backend.use_adapter("tone")
    assert backend.active_adapter == "tone"
    tuned = backend.complete(request)
    backend.use_adapter(None)
    assert backend.active_adapter is None
    back = backend.complete(request)
    assert back.token_ids == base.token_ids
    assert back.logprobs == pytest.approx(base.logprobs, abs=1e-3)
    if TRAITS[kind].applies_adapters:
        assert tuned.logprobs != pytest.approx(base.logprobs, abs=1e-3)


def test_an_adapter_name_is_loaded_once(prompted: PromptedBackend[Any], lora: Path) -> None:
    prompted.load_adapter("tone", lora)
    with pytest.raises(AdapterError, match="already loaded"):
        prompted.load_adapter("tone", lora)
    prompted.use_adapter("tone")
    assert prompted.active_adapter == "tone"


def test_a_backend_without_adapters_refuses_them() -> None:
    """The contract's defaults: adapter support is optional, and refused loudly."""

    class Minimal(Backend):
        def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
            yield Done("ok")

    backend = Minimal()
    assert backend.complete(ask("hi")).text == "ok"
    with pytest.raises(AdapterError, match="cannot load"):
        backend.load_adapter("x", Path("x.gguf"))
    with pytest.raises(AdapterError, match="cannot use"):
        backend.use_adapter("x")
    backend.use_adapter(None)
    assert backend.active_adapter is None


def test_close_ends_the_backend_and_a_second_close_is_harmless(kind: str, opener: Opener) -> None:
    with opener(kind) as backend:
        assert backend.complete(ask("hi", max_tokens=2)).usage.completion_tokens > 0
    with pytest.raises(BackendError, match="closed"):
        backend.complete(ask("hi"))
    with pytest.raises(BackendError, match="closed"):
        backend.use_adapter(None)
    backend.close()


# --- prompted backends: template, context, prefix cache, closing mid-stream ------------------


def test_prompt_is_the_models_template_with_special_tokens(prompted: PromptedBackend[Any]) -> None:
    messages = [Message(role="user", content="hi")]
    text = prompted.render_prompt(messages)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    tokens = prompted.tokenize_prompt(messages)
    opener = prompted.tokenize_prompt([])  # an empty chat renders just the generation prompt
    assert tokens[0] == opener[0] and tokens.count(opener[0]) == 2  # '<|im_start|>', 1 token
    assert tokens[-len(opener) :] == opener and len(tokens) < len(text)
    done = prompted.complete(GenerationRequest(messages=messages, max_tokens=2))
    assert done.usage.prompt_tokens == len(tokens)
    assert done.timings.first_token_ms > 0


def test_prompt_longer_than_the_context_is_refused(prompted_kind: str, opener: Opener) -> None:
    small = opener(prompted_kind, n_ctx=64, n_batch=64)  # onnx ignores llama.cpp's n_batch
    request = ask("x " * 200)
    n = len(small.tokenize_prompt(request.messages))
    assert n > small.n_ctx  # llama.cpp rounds the context up (to 256)
    with pytest.raises(
        ContextLengthError, match=f"is {n} tokens but the context holds {small.n_ctx};"
    ):
        small.complete(request)


def test_a_schema_that_cannot_compile_is_a_backend_error(prompted: PromptedBackend[Any]) -> None:
    with pytest.raises(BackendError, match="cannot constrain output to this JSON schema"):
        prompted.complete(ask("x", json_schema={"type": "frobnicate"}))


def test_forced_tokens_score_zero_and_chosen_ones_below(prompted: PromptedBackend[Any]) -> None:
    done = prompted.complete(ask("pick", max_tokens=40, json_schema=SCHEMA, logprobs=True))
    assert 0.0 in done.logprobs  # `"color": "` and friends are forced, not chosen
    assert any(lp < 0.0 for lp in done.logprobs)


def test_cached_answers_equal_fresh_ones_and_clear_cache_drops_the_prefix(
    prompted: PromptedBackend[Any], prompted_kind: str, opener: Opener
) -> None:
    request = ask("other question", system=SYSTEM, max_tokens=12)
    prompted.complete(ask("warm the cache", system=SYSTEM, max_tokens=4))
    cached = prompted.complete(request)
    with_system = prompted.tokenize_prompt([Message(role="system", content=SYSTEM)])
    system_turn = len(with_system) - len(prompted.tokenize_prompt([]))  # less the opener
    assert cached.usage.cached_prompt_tokens >= system_turn
    fresh = opener(prompted_kind).complete(request)
    assert fresh.usage.cached_prompt_tokens == 0
    assert (fresh.text, fresh.token_ids) == (cached.text, cached.token_ids)
    prompted.clear_cache()
    assert prompted.complete(request).usage.cached_prompt_tokens == 0


def test_closing_mid_stream_ends_the_stream(prompted: PromptedBackend[Any]) -> None:
    stream = prompted.generate(ask("hello", max_tokens=32))
    next(stream)
    prompted.close()
    prompted.close()
    with pytest.raises(BackendError, match="closed during generation"):
        list(stream)
