"""The contract every inference backend implements: requests in, a stream of chunks out.

A backend needs one method, ``generate``; everything else has a default here so that the
agent never knows which engine it talks to. Adapter support is optional: the defaults raise
``AdapterError`` so a backend without it fails with a clear message instead of silently
ignoring the adapter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from edge_agent.errors import AdapterError, BackendError
from edge_agent.types import Message, Usage

if TYPE_CHECKING:
    from edge_agent.models.gguf import BaseModelIdentity

# "deadline": the request's ``deadline`` passed between two tokens; the text so far is cut
# short, as with "length". A backend never raises for it: the caller (the agent) decides what
# a late answer means (a turn raises ``TurnTimeoutError``).
FinishReason = Literal["stop", "length", "deadline"]


class GenerationRequest(BaseModel):
    """One generation. Prefix caching needs no hint: backends reuse whatever prompt prefix
    they still hold."""

    messages: list[Message] = Field(min_length=1)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    json_schema: dict[str, Any] | None = None  # the output is constrained to this schema
    logprobs: bool = False
    # an instant on time.monotonic(): decoding stops between tokens once it passes, and the
    # stream ends with Done(finish_reason="deadline"); None: max_tokens is the only bound
    deadline: float | None = None


class Timings(BaseModel, frozen=True):
    prompt_ms: float = 0.0  # request start to first token: template, tokenize, prompt eval
    decode_ms: float = 0.0  # first token to last token
    first_token_ms: float = 0.0  # request start to first token, as a user feels it


_NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0)


# Chunks are slotted dataclasses, not pydantic: one is built per token on the hot path.
@dataclass(frozen=True, slots=True)
class Chunk:
    """A text delta. ``logprobs`` holds one value per token in ``token_ids`` when the request
    asked for them, else it is empty. Tokens a JSON schema forced (jump-forward decoding feeds
    them without asking the model) were not chosen and get 0.0: confidence measures should
    use the chosen tokens only, i.e. skip the zeros."""

    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Done(Chunk):
    """The last chunk of every stream: may carry a final text delta, then the totals."""

    finish_reason: FinishReason = "stop"
    usage: Usage = _NO_USAGE
    timings: Timings = Timings()


class Completion(BaseModel, frozen=True):
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: FinishReason
    usage: Usage
    timings: Timings


class Backend(ABC):
    """An inference engine holding one loaded model. Not thread-safe: one request at a time."""

    _closed = False

    @abstractmethod
    def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
        """Stream the answer; the last chunk is always a ``Done``."""

    def complete(self, request: GenerationRequest) -> Completion:
        texts: list[str] = []
        ids: list[int] = []
        logprobs: list[float] = []
        for chunk in self.generate(request):
            texts.append(chunk.text)
            ids.extend(chunk.token_ids)
            logprobs.extend(chunk.logprobs)
            if isinstance(chunk, Done):
                return Completion(
                    text="".join(texts),
                    token_ids=tuple(ids),
                    logprobs=tuple(logprobs),
                    finish_reason=chunk.finish_reason,
                    usage=chunk.usage,
                    timings=chunk.timings,
                )
        raise BackendError(f"{type(self).__name__} ended its stream without a Done chunk")

    @property
    def identity(self) -> BaseModelIdentity | None:
        """What the loaded weights are, for adapter compatibility checks; None if unknown."""
        return None

    @property
    def model_name(self) -> str:
        return type(self).__name__

    def load_adapter(self, name: str, path: Path) -> None:
        raise AdapterError(f"the {self.model_name} backend cannot load LoRA adapters")

    def use_adapter(self, name: str | None) -> None:
        if name is not None:
            raise AdapterError(f"the {self.model_name} backend cannot use LoRA adapters")

    @property
    def active_adapter(self) -> str | None:
        return None

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"the {self.model_name} backend is closed; open a new one")

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
