"""A scripted backend: the test seam for code that talks to a model (agent, tools, CLI)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

from edge_agent.backends.base import Backend, Chunk, Done, FinishReason, GenerationRequest, Timings
from edge_agent.errors import AdapterError, BackendError
from edge_agent.types import Usage

# A "token" here is a word with its leading whitespace, so chunks join back to the script.
_TOKEN = re.compile(r"\s*\S+|\s+")


class ScriptedBackend(Backend):
    """Answers each request with the next scripted response, streamed word by word.

    Records every request in ``requests`` so tests can assert on the prompts. Honours
    ``max_tokens`` (counted in words), ``stop`` and ``deadline`` (checked before each word);
    adapters are remembered by name only.
    """

    def __init__(self, responses: list[str], *, name: str = "scripted") -> None:
        self._responses = list(responses)
        self._name = name
        self.requests: list[GenerationRequest] = []
        self._adapters: dict[str, Path] = {}
        self._active: str | None = None

    @property
    def model_name(self) -> str:
        return self._name

    def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
        self._check_open()
        if not self._responses:
            raise BackendError("ScriptedBackend ran out of scripted responses")
        self.requests.append(request)
        text, finish = _apply_limits(self._responses.pop(0), request)
        words = _TOKEN.findall(text)
        logprob = (0.0,) if request.logprobs else ()
        n = 0
        for word in words:
            if request.deadline is not None and time.monotonic() >= request.deadline:
                finish = "deadline"
                break
            yield Chunk(word, (n,), logprob)
            n += 1
        prompt_tokens = sum(len(_TOKEN.findall(m.content)) for m in request.messages)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=n)
        yield Done("", finish_reason=finish, usage=usage, timings=Timings())

    def load_adapter(self, name: str, path: Path) -> None:
        self._check_open()
        self._adapters[name] = Path(path)

    def use_adapter(self, name: str | None) -> None:
        self._check_open()
        if name is not None and name not in self._adapters:
            raise AdapterError(f"no adapter named {name!r} is loaded; call load_adapter first")
        self._active = name

    @property
    def active_adapter(self) -> str | None:
        return self._active


def _apply_limits(text: str, request: GenerationRequest) -> tuple[str, FinishReason]:
    """Cut the script at the first stop string, then at ``max_tokens`` words."""
    cuts = [i for i in (text.find(s) for s in request.stop if s) if i >= 0]
    if cuts:
        text = text[: min(cuts)]
    words = _TOKEN.findall(text)
    if len(words) > request.max_tokens:
        return "".join(words[: request.max_tokens]), "length"
    return text, "stop"
