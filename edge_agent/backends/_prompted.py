"""The shape both real backends share: messages, chat template, tokens, held prefix, decode loop.

``PromptedBackend`` renders messages with the model's own chat template, tokenizes them,
checks that they fit the context and runs the one decode loop (stop strings, ``max_tokens``,
the request's ``deadline``, finish reason, usage, timings). An engine plugs in through hooks:
``_encode`` (prompt text to token ids), ``_encode_text`` (text with or without control tokens
parsed), ``_start`` (keep the longest prompt prefix its cache holds, evaluate the rest, return
the request's ``Run``) and ``_step`` (the next tokens). Adapter names and the active one are
kept here; loading and applying an adapter is the engine's.

Only the template spells control tokens: a message that holds one's text (``<|im_start|>``)
is tokenized apart from the template as plain characters, so it cannot open a turn of its
own. Every other prompt is tokenized in one piece, exactly as fine-tuning tokenizes it.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from edge_agent.backends._chat_template import ChatTemplate
from edge_agent.backends._streaming import Clock, StopScanner
from edge_agent.backends.base import Backend, Chunk, Done, FinishReason, GenerationRequest
from edge_agent.errors import AdapterError, BackendError, ContextLengthError
from edge_agent.types import Message, Usage


@dataclass(frozen=True, slots=True)
class Step:
    """Tokens one decode step produced: one the model chose, or a run the schema forced."""

    tokens: tuple[int, ...]
    text: str
    logprobs: tuple[float, ...]
    complete: bool = False  # the output is finished: stop without asking the model


class Run:
    """One request's decoding state; each engine subclasses it with its own."""

    def __init__(self, clock: Clock, cached: int, logprobs: bool) -> None:
        self.clock = clock
        self.cached = cached  # prompt tokens whose cache was reused, not evaluated
        self.logprobs = logprobs

    def flush(self) -> str:
        """Text the engine's detokenizer still holds when the stream ends."""
        return ""

    def close(self) -> None:
        """Free per-request resources; runs even when the caller abandons the stream."""


R = TypeVar("R", bound=Run)
# The clock GenerationRequest.deadline is an instant on, read between tokens; a module name
# so a test can move time inside a real decode loop.
monotonic = time.monotonic
# What a step raises when ``close`` ran between two chunks of a stream; engines check
# ``_closed`` inline, not through a call: the check runs per token.
CLOSED_MID_STREAM = "the backend was closed during generation"


class PromptedBackend(Backend, Generic[R]):
    """A backend that sees token ids: prompts come from the model's template, decoding
    continues after the longest prompt prefix the engine's cache still holds."""

    _template: ChatTemplate
    _control_texts: tuple[str, ...] = ()  # what the engine parses as control tokens

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}  # adapter name -> what the engine loaded for it
        self._active: str | None = None

    @property
    @abstractmethod
    def n_ctx(self) -> int:
        """Tokens the context holds: prompt and answer together."""

    @property
    def active_adapter(self) -> str | None:
        return self._active

    def render_prompt(
        self, messages: Sequence[Message | dict[str, Any]], *, add_generation_prompt: bool = True
    ) -> str:
        """The exact prompt text this model sees; fine-tuning formats examples with it too."""
        dicts = _template_dicts(messages)
        return self._template.render(dicts, add_generation_prompt=add_generation_prompt)

    def tokenize_prompt(self, messages: Sequence[Message | dict[str, Any]]) -> list[int]:
        """The prompt's token ids: the template's markers are control tokens, the messages'
        text is plain text (see the module docstring)."""
        dicts = _template_dicts(messages)
        forged = {i for i, m in enumerate(dicts) if self._holds_control_text(m.get("content"))}
        if forged:
            return self._encode_apart(dicts, forged)
        return self._encode(self._template.render(dicts, add_generation_prompt=True))

    def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
        self._check_open()
        clock = Clock(time.perf_counter())
        prompt = self.tokenize_prompt(request.messages)
        if not prompt:  # llama.cpp aborts the whole process on an empty batch
            raise BackendError(
                "the model's chat template rendered the messages as no tokens at all; "
                "its template is broken: use another model file"
            )
        room = self.n_ctx - len(prompt)
        if room < 1:
            raise ContextLengthError(
                f"the prompt is {len(prompt)} tokens but the context holds {self.n_ctx}; "
                "shorten the conversation or raise context_size"
            )
        run = self._start(request, prompt, clock)
        try:
            limit = min(request.max_tokens, room)
            yield from self._decode(run, request.stop, limit, len(prompt), request.deadline)
        finally:
            run.close()

    def clear_cache(self) -> None:
        """Drop the held prompt cache: the next request evaluates its whole prompt
        (benchmarks measure the uncached cost with it)."""
        self._check_open()
        self._drop_cache()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._release()

    def load_adapter(self, name: str, path: Path) -> None:
        """Load a LoRA made for this base model; it stays inactive until ``use_adapter``."""
        self._check_open()
        if name in self._loaded:
            raise AdapterError(f"an adapter named {name!r} is already loaded; pick another name")
        self._loaded[name] = self._load_adapter(name, Path(path))

    def use_adapter(self, name: str | None) -> None:
        """Make ``name`` (or the bare base model, for None) the adapter for what follows."""
        self._check_open()
        if name is not None and name not in self._loaded:
            loaded = ", ".join(sorted(self._loaded)) or "none"
            raise AdapterError(f"no adapter named {name!r} is loaded (loaded: {loaded})")
        if name != self._active:
            self._apply_adapter(name)
            self._active = name

    def _holds_control_text(self, content: Any) -> bool:
        return isinstance(content, str) and any(t in content for t in self._control_texts)

    def _encode_apart(self, dicts: list[dict[str, Any]], forged: set[int]) -> list[int]:
        """Render with a one-off mark in place of each forged message, tokenize the template
        around the marks with control tokens and each message as plain text."""
        nonce = secrets.token_hex(8)
        marked = [dict(m, content=f"\ue000{nonce}:{i}\ue001") if i in forged else m
                  for i, m in enumerate(dicts)]  # fmt: skip
        skeleton = self._template.render(marked, add_generation_prompt=True)
        head, *rest = re.split(f"\ue000{nonce}:(\\d+)\ue001", skeleton)
        ids = self._encode(head)
        for index, template in zip(rest[::2], rest[1::2], strict=True):
            ids += self._encode_text(dicts[int(index)]["content"], special=False)
            ids += self._encode_text(template, special=True)
        return ids

    # -- the decode loop ----------------------------------------------------------------------

    def _decode(
        self, run: R, stop: list[str], limit: int, n_prompt: int, deadline: float | None = None
    ) -> Iterator[Chunk]:
        step_of = self._step  # bound once: this loop runs per token
        now, end = monotonic, math.inf if deadline is None else deadline
        stops = StopScanner(stop)
        finish: FinishReason = "length"
        n = 0
        while n < limit:
            if now() >= end:  # between tokens: the prompt's evaluation runs uninterrupted
                finish = "deadline"
                break
            step = step_of(run, limit - n)
            if step is None:  # the model ended the answer
                finish = "stop"
                break
            n += len(step.tokens)
            text, stopped = stops.feed(step.text)
            if step.tokens:
                yield Chunk(text, step.tokens, step.logprobs)
            if stopped or step.complete:
                finish = "stop"
                break
        tail = "" if stops.stopped else stops.feed(run.flush())[0]
        usage = Usage(prompt_tokens=n_prompt, completion_tokens=n, cached_prompt_tokens=run.cached)
        timings = run.clock.done()
        yield Done(tail + stops.flush(), finish_reason=finish, usage=usage, timings=timings)

    # -- engine hooks -------------------------------------------------------------------------

    @abstractmethod
    def _encode(self, text: str) -> list[int]:
        """Token ids of rendered prompt text, special tokens parsed, BOS as the model wants."""

    @abstractmethod
    def _encode_text(self, text: str, *, special: bool) -> list[int]:
        """Token ids of a piece of the prompt, without BOS; control tokens parsed if
        ``special``, else spelled as plain text."""

    @abstractmethod
    def _start(self, request: GenerationRequest, prompt: list[int], clock: Clock) -> R:
        """Cache ``prompt``, reusing the longest prefix held (see ``reusable_prefix``)."""

    @abstractmethod
    def _step(self, run: R, budget: int) -> Step | None:
        """At most ``budget`` next tokens, or None when the model ends the answer."""

    @abstractmethod
    def _drop_cache(self) -> None:
        """Forget the held prompt cache (the engine keeps the model)."""

    @abstractmethod
    def _release(self) -> None:
        """Free the model; called once, by ``close``."""

    @abstractmethod
    def _load_adapter(self, name: str, path: Path) -> Any:
        """Check and load an adapter file; returns what ``_loaded`` keeps for it."""

    @abstractmethod
    def _apply_adapter(self, name: str | None) -> None:
        """Switch the engine to a loaded adapter (or to none)."""


def _template_dicts(messages: Sequence[Message | dict[str, Any]]) -> list[dict[str, Any]]:
    return [m.to_template_dict() if isinstance(m, Message) else m for m in messages]


def reusable_prefix(held: np.ndarray, prompt: Sequence[int]) -> int:
    """How many leading prompt tokens a cache holding ``held`` can keep: their common prefix,
    less the last prompt token, always evaluated because its logits pick the first answer
    token."""
    width = min(len(held), len(prompt))
    if width == 0:
        return 0
    diff = np.flatnonzero(held[:width] != np.asarray(prompt[:width], dtype=held.dtype))
    common = int(diff[0]) if diff.size else width
    return min(common, len(prompt) - 1)
