"""Jump-forward decoding: the schema oracle's forced text, and the backend feeding it in batches.

Oracle tests need no model; backend ones run on the tiny random llama, `integration` ones on
SmolLM2-135M with the Home Assistant output schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent.backends import GenerationRequest
from edge_agent.backends._jump_forward import Automaton, Forced
from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.errors import ContextLengthError
from edge_agent.types import Message
from tests.backends.support import SCHEMA, smollm2_path
from tests.tinymodel import TinyModel

LIGHT_SET = {
    "type": "object",
    "properties": {
        "name": {"const": "LightSet"},
        "arguments": {
            "type": "object",
            "properties": {
                "area": {"type": "string"},
                "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
                "on": {"type": "boolean"},
            },
            "required": ["brightness"],  # required keys come first, whatever the schema order
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
LIGHT_OFF = {
    "type": "object",
    "properties": {
        "name": {"const": "LightOff"},
        "arguments": {
            "type": "object",
            "properties": {
                "area": {"type": "string"},
                "domain": {"enum": ["light", "lock", "switch"]},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": [],
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
ANSWER = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}
TOOLS = {"anyOf": [LIGHT_SET, LIGHT_OFF, ANSWER]}
CONST_ONLY = {
    "type": "object",
    "properties": {"name": {"const": "LightOff"}, "arguments": {"const": {}}},
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
COLOR = SCHEMA  # the backend tests' enum + bounded-integer schema

# Canonical serializations (json.dumps, required keys first) of values TOOLS allows.
CANONICAL = [
    {"name": "LightSet", "arguments": {"brightness": 40}},
    {"name": "LightSet", "arguments": {"brightness": 100, "area": "kitchen", "on": True}},
    {"name": "LightSet", "arguments": {"brightness": -3, "on": False}},
    {"name": "LightOff", "arguments": {}},
    {"name": "LightOff", "arguments": {"domain": "lock"}},
    {"name": "LightOff", "arguments": {"area": "hall", "tags": ["a", "b c"]}},
    {"name": "LightOff", "arguments": {"tags": []}},
    {"answer": 'it is "on" \\ here'},
]


def forced(schema: dict[str, Any], prefix: str) -> Forced:
    cursor = Automaton(schema).cursor()
    cursor.feed(prefix)
    return cursor.forced()


# -- the oracle -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "text"),
    [
        ("", '{"'),  # then "name" or "answer"
        ('{"n', 'ame": "Light'),  # then Set or Off
        ('{"name": "LightS', 'et", "arguments": {"brightness": '),
        ('{"name": "LightSet", "arguments": {"brightness": 4', ""),  # digit, "," or "}"
        ('{"name": "LightSet", "arguments": {"brightness": 4,', ' "'),  # area or on
        ('{"name": "LightSet", "arguments": {"brightness": 4, "o', 'n": '),
        ('{"name": "LightOff", "arguments": {', ""),  # a key or "}"
        ('{"name": "LightOff", "arguments": {"domain": "s', 'witch"'),
        ('{"name": "LightOff", "arguments": {"domain": "l', ""),  # light or lock
        ('{"name": "LightOff", "arguments": {"tags": ["x"', ""),  # ", " or "]"
        ('{"a', 'nswer": "'),
    ],
)
def test_forced_text(prefix: str, text: str) -> None:
    got = forced(TOOLS, prefix)
    assert got.text == text
    assert not got.complete


def test_the_end_of_the_output_is_forced_and_complete() -> None:
    got = forced(TOOLS, '{"name": "LightOff", "arguments": {"domain": "lock"}')
    assert (got.text, got.complete) == ("}", True)
    assert forced(TOOLS, '{"answer": "hi"}') == Forced("", True, frozenset())
    last_key = forced(TOOLS, '{"name": "LightSet", "arguments": {"brightness": 4, "on": t')
    assert (last_key.text, last_key.complete) == ("rue}}", True)
    whole = forced(CONST_ONLY, "")
    assert (whole.text, whole.complete) == ('{"name": "LightOff", "arguments": {}}', True)


def test_next_chars_show_the_choice() -> None:
    assert forced(TOOLS, "").next_chars == {"n", "a"}
    assert forced(TOOLS, '{"name": "LightOff", "arguments": {').next_chars == {'"', "}"}
    # Inside a string only its typical first letter counts (see the module docstring).
    assert forced(TOOLS, '{"answer": ').next_chars == {"a"}


def test_non_canonical_text_kills_the_cursor() -> None:
    cursor = Automaton(TOOLS).cursor()
    cursor.feed('{"name":"')  # the grammar allows no space; canonical JSON has one
    assert not cursor.alive
    assert cursor.forced() == Forced("", False, frozenset())
    cursor = Automaton(TOOLS).cursor()
    cursor.feed('{"name": "LightSet", "arguments": {"area": ')  # required key must come first
    assert not cursor.alive


@pytest.mark.parametrize("value", CANONICAL, ids=lambda v: json.dumps(v)[:40])
def test_forced_text_always_continues_a_canonical_output(value: dict[str, Any]) -> None:
    text = json.dumps(value, ensure_ascii=False)
    automaton = Automaton(TOOLS)
    for cut in range(len(text) + 1):
        cursor = automaton.cursor()
        cursor.feed(text[:cut])
        assert cursor.alive, text[:cut]
        got = cursor.forced()
        assert text[cut:].startswith(got.text), (text[:cut], got)
        if got.complete:  # complete only where the text really ends
            assert cut + len(got.text) == len(text)
    end = automaton.cursor()
    end.feed(text)
    assert end.forced().complete


def test_unmodelled_schemas_force_nothing_after_them() -> None:
    schema = {"type": "object", "properties": {"x": {}}, "required": ["x"]}  # open object
    assert forced(schema, "").text == ""
    closed = {**schema, "additionalProperties": False}
    assert forced(closed, "").text == '{"x": '
    assert forced(closed, '{"x": [1, {"a"').text == ""


# -- the backend, tiny model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model: TinyModel) -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(tiny_model.gguf_path, n_ctx=512, n_threads=1)
    yield backend
    backend.close()


def ask(text: str, schema: dict[str, Any], **kwargs: Any) -> GenerationRequest:
    messages = [Message(role="user", content=text)]
    return GenerationRequest(messages=messages, json_schema=schema, **kwargs)


def run(backend: LlamaCppBackend, request: GenerationRequest, *, jump: bool) -> Any:
    backend.jump_forward = jump
    try:
        return backend.complete(request)
    finally:
        backend.jump_forward = True


def count_evals(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the batches the backend evaluates (one llama_decode each, prompt included)."""
    sizes: list[int] = []
    original = LlamaCppBackend._eval

    def spy(self: LlamaCppBackend, tokens: Any) -> None:
        sizes.append(len(tokens))
        original(self, tokens)

    monkeypatch.setattr(LlamaCppBackend, "_eval", spy)
    return sizes


def check_tools(text: str) -> None:
    """The output is one of TOOLS' alternatives (a hand check: jsonschema is not a dependency)."""
    value = json.loads(text)
    if "answer" in value:
        assert set(value) == {"answer"} and isinstance(value["answer"], str)
        return
    assert set(value) == {"name", "arguments"}
    args = value["arguments"]
    if value["name"] == "LightSet":
        assert set(args) <= {"area", "brightness", "on"} and "brightness" in args
        assert isinstance(args["brightness"], int) and 0 <= args["brightness"] <= 100
    else:
        assert value["name"] == "LightOff" and set(args) <= {"area", "domain", "tags"}
        assert args.get("domain", "light") in {"light", "lock", "switch"}


@pytest.mark.parametrize("prompt", ["dim the light", "off", "what is on?", "x y z"])
def test_greedy_output_with_jump_forward_is_valid(tiny: LlamaCppBackend, prompt: str) -> None:
    with_jump = run(tiny, ask(prompt, TOOLS, max_tokens=120), jump=True)
    without = run(tiny, ask(prompt, TOOLS, max_tokens=120), jump=False)
    # A random model picks random spacing where the grammar allows it, and forced tokens
    # change what it sees next, so the two texts may differ: both must be valid.
    for done in (with_jump, without):
        if done.finish_reason == "stop":
            check_tools(done.text)
    assert with_jump.text.startswith('{"')  # canonical where forced


def test_fully_forced_output_needs_no_decoding(
    tiny: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = ask("anything", CONST_ONLY, logprobs=True)
    without = run(tiny, request, jump=False)
    sizes = count_evals(monkeypatch)
    done = run(tiny, request, jump=True)
    assert json.loads(done.text) == json.loads(without.text)  # spacing aside, the same
    assert done.text == '{"name": "LightOff", "arguments": {}}'
    assert done.finish_reason == "stop" and set(done.logprobs) == {0.0}
    assert sizes == []  # not even the prompt: no token had to be chosen


def test_jump_forward_cuts_decode_calls(
    tiny: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = ask("pick", COLOR, max_tokens=40, logprobs=True)
    sizes = count_evals(monkeypatch)
    plain = run(tiny, request, jump=False)
    plain_calls, sizes[:] = len(sizes), []
    jumped = run(tiny, request, jump=True)
    assert len(sizes) < plain_calls - 3, (sizes, plain_calls)
    assert max(sizes[1:]) > 1  # forced tokens went in with the chosen one
    for done in (plain, jumped):
        value = json.loads(done.text)
        assert value["color"] in {"red", "green", "blue"} and 1 <= value["count"] <= 12
    n_forced = jumped.logprobs.count(0.0)
    assert n_forced >= 4 and len(jumped.logprobs) == len(jumped.token_ids)
    assert jumped.usage.completion_tokens == len(jumped.token_ids)


def test_forced_tokens_respect_max_tokens(tiny: LlamaCppBackend) -> None:
    done = run(tiny, ask("x", CONST_ONLY, max_tokens=3), jump=True)
    assert done.finish_reason == "length"
    assert done.usage.completion_tokens == len(done.token_ids) == 3


def test_a_forced_token_the_grammar_refuses_falls_back_to_decoding(
    tiny: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = ask("pick", COLOR, max_tokens=40)
    plain = run(tiny, request, jump=False)
    real = tiny._tokenize_text
    # A tokenizer that disagrees with the grammar: every forced "{" comes out as "[".
    monkeypatch.setattr(tiny, "_tokenize_text", lambda text: real(text.replace(b"{", b"[")))
    fallback = run(tiny, request, jump=True)
    assert fallback.token_ids == plain.token_ids  # nothing forced, nothing lost


def test_clear_cache_makes_the_next_request_evaluate_its_whole_prompt(
    tiny: LlamaCppBackend,
) -> None:
    request = ask("the same prompt twice", COLOR, max_tokens=4)
    tiny.complete(request)
    assert tiny.complete(request).usage.cached_prompt_tokens > 0
    tiny.clear_cache()
    assert tiny.complete(request).usage.cached_prompt_tokens == 0


def test_prompt_longer_than_context_is_a_context_length_error(tiny_model: TinyModel) -> None:
    with (
        LlamaCppBackend(tiny_model.gguf_path, n_ctx=64, n_batch=64) as backend,
        pytest.raises(ContextLengthError, match="context holds"),
    ):
        backend.complete(ask("x " * 200, COLOR))


def test_strings_hold_no_raw_control_characters(tiny: LlamaCppBackend) -> None:
    # llama-cpp-python's string rule lets them through and json.loads then fails.
    for seed in range(8):
        done = tiny.complete(ask("say", ANSWER, temperature=1.0, seed=seed, max_tokens=60))
        if done.finish_reason == "stop":
            assert isinstance(json.loads(done.text)["answer"], str)
        assert not any(ord(c) < 0x20 for c in done.text.strip()), repr(done.text)


# -- SmolLM2-135M with the Home Assistant schema (integration) --------------------------------


@pytest.fixture(scope="module")
def smollm2() -> Iterator[LlamaCppBackend]:
    path = smollm2_path()
    backend = LlamaCppBackend(path, n_ctx=4096, n_threads=1)
    yield backend
    backend.close()


@pytest.mark.integration
def test_smollm2_home_calls_are_valid_with_jump_forward(
    smollm2: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent import prompt
    from edge_agent.skills.home.dataset import load_split
    from edge_agent.skills.home.toolset import home_toolset

    rows = load_split("test")[:4]
    sizes = count_evals(monkeypatch)
    calls = {True: 0, False: 0}
    tokens = {True: 0, False: 0}
    for row in rows:
        toolset = home_toolset(inventory=row.inventory())
        context = toolset.context(row.sentence, row.speaker_area) if toolset.context else None
        messages = prompt.messages_for(row.sentence, toolset, context=context)
        request = GenerationRequest(
            messages=messages, json_schema=prompt.output_schema(toolset), max_tokens=80
        )
        for jump in (True, False):
            sizes[:] = []
            done = run(smollm2, request, jump=jump)
            calls[jump] += len(sizes)
            tokens[jump] += done.usage.completion_tokens
            if done.finish_reason == "length":  # the base model can ramble inside a string
                continue
            parsed = prompt.parse_output(done.text)
            if not isinstance(parsed, str):
                toolset.get(parsed.name).validate(parsed.arguments)
    # Outputs differ between the modes (forced canonical spacing changes what the base model
    # writes next), so compare decode calls per output token.
    assert calls[True] / tokens[True] < 0.8 * calls[False] / tokens[False], (calls, tokens)


AREA_ONLY = {
    "type": "object",
    "properties": {
        "name": {"const": "Area"},
        "arguments": {
            "type": "object",
            "properties": {"area": {"type": "string"}},
            "required": ["area"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}


def test_forced_text_after_bytes_that_are_no_utf8_is_tokenized_alone() -> None:
    """A random model can write a byte that is no UTF-8 inside a string (decoded as U+FFFD);
    re-tokenizing it with the forced text would hand llama.cpp invalid UTF-8, and its
    tokenizer aborts the process (seen as a `serve` crash: "invalid codepoint"). This
    stand-in tokenizer raises where llama.cpp would abort."""
    asked: list[bytes] = []

    def tokenize(text: bytes) -> list[int]:
        text.decode("utf-8")  # llama.cpp: std::invalid_argument → terminate
        asked.append(text)
        return list(text)

    from edge_agent.backends._jump_forward import JumpForward

    jump = JumpForward(Automaton(AREA_ONLY).cursor(), tokenize, lambda t: bytes([t]))
    for ch in '{"name": "Area", "arguments": {"area": "ab':
        jump.observe(ord(ch), ch.encode(), ch)
    jump.observe(0xFF, b"\xff", "\ufffd")
    jump.observe(ord('"'), b'"', '"')
    forced = jump.next(8)
    assert forced is not None and bytes(forced.tokens) == b"}}"
    assert asked == [b"}}"]
