"""The llama.cpp backend beyond the contract (test_contract.py): raw logprobs, the grammar
fast path, KV stashes across LoRA switches, load errors, SmolLM2.

Fast tests run on a tiny random llama built by the test; `integration` ones on SmolLM2-135M.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.backends._json_grammar import int_range_gbnf
from edge_agent.backends._streaming import StopScanner
from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.errors import (
    AdapterMismatchError,
    BackendError,
    InvalidAdapterError,
    InvalidModelFileError,
)
from edge_agent.models.gguf import identity_of, read_header
from edge_agent.types import Message
from tests.backends.support import SCHEMA, ask, check_schema_output, random_lora
from tests.backends.support import smollm2_path as shipped_smollm2
from tests.tinymodel import TinyModel

SYSTEM = "You are a helpful assistant. " * 12


def system_tokens(backend: LlamaCppBackend, system: str) -> int:
    """Prompt tokens of the system turn alone (without the assistant turn opener)."""
    with_system = backend.tokenize_prompt([Message(role="system", content=system)])
    return len(with_system) - len(backend.tokenize_prompt([]))


# -- tiny model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_path(tiny_model: TinyModel) -> Path:
    return tiny_model.gguf_path


@pytest.fixture(scope="module")
def tiny_loras(tiny_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    identity = identity_of(read_header(tiny_path))
    folder = tmp_path_factory.mktemp("loras")
    return {f"l{s}": random_lora(identity, folder / f"l{s}.gguf", s) for s in (1, 2)}


@pytest.fixture
def tiny(tiny_path: Path) -> Iterator[LlamaCppBackend]:
    with LlamaCppBackend(tiny_path, n_ctx=512, n_threads=2) as backend:
        yield backend


def test_logprobs_match_llama_cpp_pythons_own(tiny: LlamaCppBackend, tiny_path: Path) -> None:
    import llama_cpp

    request = ask("hello", max_tokens=8, logprobs=True)
    ours = tiny.complete(request)
    raw = llama_cpp.Llama(str(tiny_path), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    out = raw.create_completion(tiny.tokenize_prompt(request.messages), max_tokens=8,
                                temperature=0.0, logprobs=1)  # fmt: skip
    raw.close()
    expected = out["choices"][0]["logprobs"]["token_logprobs"][: len(ours.logprobs)]
    np.testing.assert_allclose(ours.logprobs, expected, atol=1e-4)


def grammar_in_chain_tokens(path: Path, prompt: list[int], limit: int) -> list[int]:
    """Greedy tokens from llama-cpp-python itself, its grammar applied to the full vocab."""
    import llama_cpp

    from edge_agent.backends._json_grammar import schema_to_gbnf

    raw = llama_cpp.Llama(str(path), n_ctx=1024, n_threads=2, verbose=False)
    grammar = llama_cpp.LlamaGrammar.from_string(schema_to_gbnf(SCHEMA))
    tokens: list[int] = []
    for token in raw.generate(prompt, temp=0.0, grammar=grammar):
        if llama_cpp.llama_vocab_is_eog(raw._model.vocab, token) or len(tokens) == limit:
            break
        tokens.append(token)
    raw.close()
    return tokens


def count_full_grammar_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from edge_agent.backends._llama_sampling import Sampler

    calls: list[int] = []
    original = Sampler._constrained

    def spy(self: Sampler, *args: Any) -> int:
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(Sampler, "_constrained", spy)
    return calls


def test_grammar_check_then_resample_equals_full_grammar(
    tiny: LlamaCppBackend, tiny_path: Path
) -> None:
    tiny.jump_forward = False  # forced tokens would differ from llama.cpp's own decoding
    request = ask("pick", json_schema=SCHEMA, max_tokens=40)
    ours = tiny.complete(request)
    prompt = tiny.tokenize_prompt(request.messages)
    assert list(ours.token_ids) == grammar_in_chain_tokens(tiny_path, prompt, 40)
    check_schema_output(ours.text)


def test_adapter_switching_matches_fresh_backends(
    tiny: LlamaCppBackend, tiny_path: Path, tiny_loras: dict[str, Path]
) -> None:
    for name, path in tiny_loras.items():
        tiny.load_adapter(name, path)
    request = ask("question", system=SYSTEM, max_tokens=12, logprobs=True)
    seen = {}
    for name in (None, "l1", "l2", "l1", None, "l2"):
        tiny.use_adapter(name)
        assert tiny.active_adapter == name
        seen.setdefault(name, []).append(tiny.complete(request))
    for name, results in seen.items():
        assert results[1].usage.cached_prompt_tokens > 0  # its stash came back
        with LlamaCppBackend(tiny_path, n_ctx=512, n_threads=2) as fresh:
            if name:
                fresh.load_adapter(name, tiny_loras[name])
                fresh.use_adapter(name)
            expected = fresh.complete(request)
        for got in results:
            assert got.token_ids == expected.token_ids, name
            np.testing.assert_allclose(got.logprobs, expected.logprobs, atol=1e-3)
    assert seen["l1"][0].logprobs != seen[None][0].logprobs  # the adapter does something


def test_a_junk_adapter_is_refused(tiny: LlamaCppBackend, tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(InvalidAdapterError):
        tiny.load_adapter("junk", junk)


def test_adapter_for_another_base_is_refused(tiny: LlamaCppBackend, tmp_path: Path) -> None:
    other = replace(tiny.identity, base_name="some other model")
    path = random_lora(other, tmp_path / "other.gguf", seed=3)
    with pytest.raises(AdapterMismatchError, match="base_name"):
        tiny.load_adapter("other", path)


def test_corrupt_model_is_refused_before_llama_cpp(tiny_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_path.read_bytes()[:4096])
    with pytest.raises(InvalidModelFileError):
        LlamaCppBackend(broken)


def test_llama_cpp_load_failure_is_a_backend_error(tmp_path: Path) -> None:
    from gguf import GGUFWriter

    path = tmp_path / "no-tensors.gguf"
    writer = GGUFWriter(path, arch="llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(BackendError, match="could not load no-tensors.gguf"):
        LlamaCppBackend(path)


def test_bad_kv_cache_type(tiny_path: Path) -> None:
    with pytest.raises(BackendError, match="kv_cache_type"):
        LlamaCppBackend(tiny_path, kv_cache_type="f8")


def test_llama_cpp_prints_nothing(tiny_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with LlamaCppBackend(tiny_path, n_ctx=128) as backend:
        backend.complete(ask("hi", max_tokens=4))
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_stop_scanner_holds_back_partial_matches() -> None:
    scanner = StopScanner(["</end>"])
    assert scanner.feed("abc</") == ("abc", False)
    assert scanner.feed("en") == ("", False)
    assert scanner.feed("x") == ("</enx", False)
    assert scanner.feed("ok</end>more") == ("ok", True)
    assert StopScanner([]).feed("anything") == ("anything", False)


@pytest.mark.parametrize(
    ("lo", "hi"), [(0, 0), (5, 5), (1, 12), (10, 99), (-5, -1), (-37, 905), (123, 4567), (0, 1000)]
)
def test_integer_range_grammar_is_exact(lo: int, hi: int) -> None:
    pattern = re.compile(_gbnf_to_regex(int_range_gbnf(lo, hi)))
    for n in range(-1200, 5000):
        assert bool(pattern.fullmatch(str(n))) == (lo <= n <= hi), n
    assert not pattern.fullmatch("007") and not pattern.fullmatch("-0")


def _gbnf_to_regex(expr: str) -> str:
    # The range grammar uses only quoted digit/minus literals, [a-b] classes, | and ( ).
    return re.sub(r'"([-0-9]+)"', lambda m: re.escape(m.group(1)), expr).replace(" ", "")


# -- SmolLM2-135M (integration) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_path() -> Path:
    path = shipped_smollm2()
    assert path.is_file(), path
    return path


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path) -> Iterator[LlamaCppBackend]:
    with LlamaCppBackend(smollm2_path, n_ctx=2048, n_threads=4) as backend:
        yield backend


@pytest.mark.integration
def test_smollm2_knows_paris(smollm2: LlamaCppBackend) -> None:
    # Without a system turn SmolLM2's own template inserts its stock "You are a helpful AI
    # assistant named SmolLM..." prompt, after which this Q4_1 build answers "L'Étoile, la
    # Cité, ..." for this one question (Berlin etc. still work); edge-agent always sends one.
    question = ask("What is the capital of France?", system="You are a helpful assistant.")
    done = smollm2.complete(question.model_copy(update={"max_tokens": 32}))
    assert "Paris" in done.text
    assert done.finish_reason == "stop"


@pytest.mark.integration
def test_smollm2_prompt_is_its_own_template(smollm2: LlamaCppBackend) -> None:
    prompt = smollm2.render_prompt([Message(role="user", content="Hi")])
    assert prompt == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    tokens = smollm2.tokenize_prompt([Message(role="user", content="Hi")])
    assert tokens[0] == 1 and tokens.count(1) == 3  # <|im_start|> as one special token, no BOS


@pytest.mark.integration
def test_smollm2_stop_string_and_streaming(smollm2: LlamaCppBackend) -> None:
    request = ask("Count from 1 to 10, separated by commas.", max_tokens=48, stop=["5"])
    chunks = list(smollm2.generate(request))
    text = "".join(c.text for c in chunks)
    assert "4" in text and "5" not in text
    assert chunks[-1].finish_reason == "stop"  # type: ignore[attr-defined]


@pytest.mark.integration
def test_smollm2_json_schema(smollm2: LlamaCppBackend) -> None:
    request = ask("Describe a sky colour and a small number as JSON.", json_schema=SCHEMA)
    check_schema_output(smollm2.complete(request).text)
    check_schema_output(smollm2.complete(ask("Pick one.", json_schema=SCHEMA, temperature=0.8,
                                             seed=7)).text)  # fmt: skip


@pytest.mark.integration
def test_smollm2_grammar_fast_path_is_exact(
    smollm2: LlamaCppBackend, smollm2_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes = count_full_grammar_passes(monkeypatch)
    monkeypatch.setattr(smollm2, "jump_forward", False)  # compare token by token decoding
    request = ask("Pick a colour and a count as JSON.", json_schema=SCHEMA, max_tokens=40)
    ours = smollm2.complete(request)
    prompt = smollm2.tokenize_prompt(request.messages)
    assert list(ours.token_ids) == grammar_in_chain_tokens(smollm2_path, prompt, 40)
    assert len(passes) < len(ours.token_ids)  # most tokens were accepted by the cheap check


@pytest.mark.integration
def test_smollm2_prefix_cache_counts(smollm2: LlamaCppBackend) -> None:
    system = "You are a careful assistant for a smart home. " * 8
    smollm2.use_adapter(None)
    smollm2.complete(ask("Turn on the lights.", system=system, max_tokens=8))
    second = smollm2.complete(ask("Is the door locked?", system=system, max_tokens=8))
    assert second.usage.cached_prompt_tokens >= system_tokens(smollm2, system)


@pytest.mark.integration
def test_smollm2_adapter_switching(smollm2_path: Path, tmp_path: Path) -> None:
    with LlamaCppBackend(smollm2_path, n_ctx=1024, n_threads=4) as backend:
        lora = random_lora(backend.identity, tmp_path / "smol-lora.gguf", seed=5, rank=2)
        backend.load_adapter("tone", lora)
        request = ask("Name a fruit.", system="Answer in one word.", max_tokens=8)
        base = backend.complete(request)
        backend.use_adapter("tone")
        tuned = backend.complete(request)
        backend.use_adapter(None)
        assert backend.complete(request).token_ids == base.token_ids
        backend.use_adapter("tone")
        again = backend.complete(request)
    assert again.token_ids == tuned.token_ids
    assert again.usage.cached_prompt_tokens > 0
    with LlamaCppBackend(smollm2_path, n_ctx=1024, n_threads=4) as fresh:
        fresh.load_adapter("tone", lora)
        fresh.use_adapter("tone")
        assert fresh.complete(request).token_ids == tuned.token_ids


@pytest.mark.integration
def test_smollm2_corrupt_copy_is_refused(smollm2_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "smollm2-truncated.gguf"
    with smollm2_path.open("rb") as src:
        broken.write_bytes(src.read(3 << 20))
    with pytest.raises(InvalidModelFileError):
        LlamaCppBackend(broken)


@pytest.mark.integration
def test_smollm2_refuses_an_adapter_for_another_base(
    smollm2: LlamaCppBackend, tiny_path: Path, tmp_path: Path
) -> None:
    tiny_lora = random_lora(identity_of(read_header(tiny_path)), tmp_path / "tiny.gguf", 1)
    with pytest.raises(AdapterMismatchError):
        smollm2.load_adapter("tiny", tiny_lora)
