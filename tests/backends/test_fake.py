"""The scripted backend and the backend registry: the seams other tests build on (the contract
all backends keep, the fake included, is test_contract.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge_agent.backends import (
    Backend,
    Done,
    GenerationRequest,
    available_backends,
    open_backend,
    register_backend,
)
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.errors import AdapterError, BackendError, ConfigError
from edge_agent.types import Message


def _request(**kwargs: object) -> GenerationRequest:
    return GenerationRequest(messages=[Message(role="user", content="hello there")], **kwargs)


def test_streams_the_script_word_by_word() -> None:
    backend = ScriptedBackend(["Paris is the capital."])
    chunks = list(backend.generate(_request()))
    assert "".join(c.text for c in chunks) == "Paris is the capital."
    assert isinstance(chunks[-1], Done)
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens == 4


def test_complete_collects_the_stream_and_records_requests() -> None:
    backend = ScriptedBackend(["one", "two"])
    assert backend.complete(_request()).text == "one"
    assert backend.complete(_request()).text == "two"
    assert [r.messages[0].content for r in backend.requests] == ["hello there"] * 2


def test_max_tokens_and_stop() -> None:
    backend = ScriptedBackend(["a b c d", "x STOP y"])
    first = backend.complete(_request(max_tokens=2))
    assert (first.text, first.finish_reason) == ("a b", "length")
    second = backend.complete(_request(stop=["STOP"]))
    assert (second.text, second.finish_reason) == ("x ", "stop")


def test_logprobs_one_per_token_when_asked() -> None:
    done = ScriptedBackend(["a b"]).complete(_request(logprobs=True))
    assert len(done.logprobs) == len(done.token_ids) == 2


def test_running_out_of_script_is_an_error() -> None:
    with pytest.raises(BackendError, match="ran out"):
        ScriptedBackend([]).complete(_request())


def test_adapters_by_name(tmp_path: Path) -> None:
    backend = ScriptedBackend([])
    with pytest.raises(AdapterError):
        backend.use_adapter("missing")
    backend.load_adapter("tone", tmp_path / "tone.gguf")
    backend.use_adapter("tone")
    assert backend.active_adapter == "tone"


def test_stream_without_done_is_an_error() -> None:
    class Broken(Backend):
        def generate(self, request: GenerationRequest):  # type: ignore[no-untyped-def]
            return iter(())

    with pytest.raises(BackendError, match="without a Done"):
        Broken().complete(_request())


def test_registry_opens_by_kind_and_rejects_duplicates() -> None:
    assert {"fake", "llama_cpp"} <= set(available_backends())
    backend = open_backend("fake", responses=["hi"])
    assert backend.complete(_request()).text == "hi"
    with pytest.raises(ConfigError, match="already registered"):
        register_backend("fake", "somewhere:Else")
    with pytest.raises(ConfigError, match="unknown backend"):
        open_backend("nope")


def test_importing_edge_agent_does_not_import_llama_cpp() -> None:
    import subprocess

    code = "import edge_agent.backends, sys; print('llama_cpp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_request_validation() -> None:
    with pytest.raises(ValueError):
        GenerationRequest(messages=[])
    with pytest.raises(ValueError):
        Message(role="robot", content="x")  # type: ignore[arg-type]
