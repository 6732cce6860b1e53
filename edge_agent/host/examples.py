"""Curated records as training examples, tokenized by llama.cpp exactly as the device does.

The prompt is the device's own: ``messages_for(..., adapted=True)`` rendered and tokenized by
``LlamaCppBackend.tokenize_prompt``. The target is the canonical ``call_json`` (the key order
the grammar enforces) followed by the end-of-turn token, tokenized on its own because that is
how the model produces it: token by token after the prompt. Labels are -100 on the prompt, so
the loss is on the assistant's tokens only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import FlywheelError
from edge_agent.prompt import call_json, messages_for
from edge_agent.tools import Toolset

if TYPE_CHECKING:
    from edge_agent.backends.llama_cpp import LlamaCppBackend
    from edge_agent.host.curate import Record

IGNORE = -100  # the label torch's cross-entropy skips


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_target(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


class Tokenizer:
    """The device's prompt tokenization plus llama.cpp's tokenizer for the answer."""

    def __init__(self, model_path: str | Path) -> None:
        import llama_cpp

        from edge_agent.backends.llama_cpp import LlamaCppBackend

        self.backend: LlamaCppBackend = LlamaCppBackend(model_path, n_ctx=512, n_threads=1)
        self._vocab = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
        self.end_of_turn = int(self._vocab.token_eos())

    def prompt(self, messages: Sequence[object]) -> list[int]:
        return self.backend.tokenize_prompt(messages)  # type: ignore[arg-type]

    def answer(self, text: str) -> list[int]:
        tokens = self._vocab.tokenize(text.encode(), add_bos=False, special=False)
        return [*tokens, self.end_of_turn]

    def close(self) -> None:
        self.backend.close()
        self._vocab.close()


def build_example(
    record: Record, toolset: Toolset, tokenizer: Tokenizer, *, adapted: bool = True
) -> Example:
    """`adapted=False` keeps the tool list in the prompt: for skills whose tools change per
    request (BFCL's functions), the adapter cannot know them by heart."""
    if record.call is None:
        raise FlywheelError(f"record {record.id} has no call to learn; curate the records first")
    messages = messages_for(record.request, toolset, context=record.context, adapted=adapted)
    prompt = tokenizer.prompt(messages)
    answer = tokenizer.answer(call_json(record.call, toolset))
    return Example(input_ids=prompt + answer, labels=[IGNORE] * len(prompt) + answer)


def build_examples(
    records: Iterable[Record], toolset: Toolset, tokenizer: Tokenizer
) -> list[Example]:
    return [build_example(r, toolset, tokenizer) for r in records]
