"""Prompt-lookup drafts: guess the next tokens by copying what follows in the prompt.

A tool call's free text is mostly copied: a device name from the request or the device
list, a number from "to 100%", a whole earlier call when a repaired step repeats it. When the
text written so far ends with characters that also occur in the prompt, the characters that
follow them there are a cheap guess of what comes next. The llama.cpp backend evaluates the
guess in the same batch as the last chosen token and keeps the guessed tokens the model
itself picks at each position (greedy, under the grammar): the output is the one decoding
token by token would give, in fewer decode steps. A wrong guess costs only its batch
positions, a few ms each on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_MATCH = 24  # longest written suffix looked up: longer ones add no information
# A match is trusted when it is this long, or when it starts a word both in the output and
# in the prompt ("Sl" of "Sliding"): "urn" of "HassTurn" matched "turn all the lights" and
# '{"' matched a tool result's '{"error', both wrong guesses.
TRUSTED_MATCH = 8


class PromptLookup:
    """One request's drafter over ``source`` (the prompt's message text)."""

    def __init__(
        self, source: str, tokenize: Callable[[bytes], list[int]], *, max_tokens: int
    ) -> None:
        self._source = source
        self._tokenize = tokenize  # text -> ids, no BOS, control tokens not parsed
        self.max_tokens = max_tokens
        self.written = ""  # the output so far, as text
        self.proposed = 0  # draft tokens offered, and kept: the acceptance rate
        self.accepted = 0

    def observe(self, text: str) -> None:
        self.written = (self.written + text)[-MAX_MATCH:]

    def propose(self, limit: int) -> list[int]:
        """At most ``limit`` tokens likely to come next, or none."""
        limit = min(limit, self.max_tokens)
        if limit <= 0:
            return []
        text = continuation(self._source, self.written)
        if not text:
            return []
        tokens = self._tokenize(text.encode())[:limit]
        self.proposed += len(tokens)
        return tokens


def continuation(source: str, written: str, *, max_chars: int = 48) -> str:
    """The text after the last place ``source`` holds the longest trusted suffix of
    ``written`` (see ``TRUSTED_MATCH``): up to the end of that line after a long match, the
    words that follow after a short one; "" when none matches."""
    for n in range(min(len(written), MAX_MATCH), 0, -1):
        suffix = written[-n:]
        word = _starts_word(written, len(written) - n) and any(c.isalnum() for c in suffix)
        if n < TRUSTED_MATCH and not word:
            continue
        at = _find(source, suffix, word_start=n < TRUSTED_MATCH)
        if at >= 0:
            rest = source[at + n : at + n + max_chars].split("\n", 1)[0]
            return rest if n >= TRUSTED_MATCH else _words(rest)
    return ""


def _words(text: str) -> str:
    """The run of words ``text`` starts with: what a short match predicts (a name's rest,
    a number's digits), not the punctuation after it."""
    end = next((i for i, c in enumerate(text) if not (c.isalnum() or c == " ")), len(text))
    return text[:end].rstrip()


def _find(source: str, suffix: str, *, word_start: bool) -> int:
    """The last index of ``suffix`` in ``source`` (where a word starts, if asked); -1."""
    at = source.rfind(suffix)
    while word_start and at >= 0 and not _starts_word(source, at):
        at = source.rfind(suffix, 0, at + len(suffix) - 1)
    return at


def _starts_word(text: str, i: int) -> bool:
    return i == 0 or not text[i - 1].isalnum() or not text[i].isalnum()
