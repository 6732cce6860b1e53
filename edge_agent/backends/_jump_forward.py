"""Jump-forward decoding: text a JSON schema forces is fed to the model in one batch.

In a tool call most characters are not the model's choice: ``{"``, ``": "``, the rest of a
tool name once its prefix is unique, ``", "arguments": {``, closing braces. The llama.cpp
backend decodes one token per step; with jump-forward it asks a ``Cursor`` what the schema
forces after the text so far, tokenizes that text and evaluates it together with the token
the model just chose, in one ``llama_decode``.

The oracle is a character automaton (an NFA) of the schema's *canonical* serializations:
``json.dumps`` spacing (``": "``, ``", "``), object keys required-first then optional, each
in schema order, as llama.cpp's schema grammar and ``edge_agent.prompt`` order them. It may
accept more than the grammar (free strings, unbounded numbers, unknown sub-schemas), never
less, so the text it forces is a prefix of every canonical continuation. Should the model
leave the canonical form (the grammar also allows no space after ``:``), the cursor dies and
decoding goes on token by token: jump-forward only ever skips, it never steers.

Token boundaries: training data is tokenized as whole strings, so forced text should cut
where the pre-tokenizer cuts anyway (``_splits``). A forced segment whose last piece could
merge with what follows (`` {`` before ``"`` or ``}``) is trimmed back to the previous cut,
and one that continues the model's last word is tokenized together with that word's tokens
and used only if their ids stay the same. A string value is assumed to start with a letter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from edge_agent.errors import BackendError

Predicate = Callable[[str], bool]
# Each array item and optional member is built twice, so nesting doubles the states: past
# this many (the home toolset needs ~10k) building stops and the backend decodes without it.
MAX_STATES = 100_000


# -- schema → character automaton ----------------------------------------------------------


@dataclass
class _State:
    char: str | None = None  # a literal transition on this character …
    cls: Predicate | None = None  # … or on any character of a class
    cls_hint: str = ""  # a typical character of that class, for boundary decisions
    to: int = -1
    eps: list[int] = field(default_factory=list)


class Automaton:
    """The canonical serializations of one JSON schema; build once, walk with ``cursor()``."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.states: list[_State] = []
        self.start = self._new()
        self.accept = _Builder(self).value(schema, self.start)
        self._closures: dict[int, frozenset[int]] = {}

    def cursor(self) -> Cursor:
        return Cursor(self, self.closure([self.start]))

    def _new(self) -> int:
        if len(self.states) >= MAX_STATES:
            raise BackendError(f"the schema's jump-forward automaton passes {MAX_STATES} states")
        self.states.append(_State())
        return len(self.states) - 1

    def closure(self, states: Iterable[int]) -> frozenset[int]:
        out: set[int] = set()
        for s in states:
            cached = self._closures.get(s)
            if cached is None:
                cached = self._closures[s] = self._closure_of(s)
            out |= cached
        return frozenset(out)

    def _closure_of(self, state: int) -> frozenset[int]:
        seen, todo = {state}, [state]
        while todo:
            for nxt in self.states[todo.pop()].eps:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return frozenset(seen)


class _Builder:
    """Thompson construction: each method adds a fragment from ``start`` and returns its end."""

    def __init__(self, nfa: Automaton) -> None:
        self.nfa = nfa

    def value(self, schema: Any, start: int) -> int:
        if not isinstance(schema, dict):
            return self.free(start)
        if "anyOf" in schema or "oneOf" in schema:
            return self.alt(schema.get("anyOf") or schema["oneOf"], start)
        if "const" in schema:
            return self.literal(json.dumps(schema["const"]), start)  # the grammar's spelling
        if "enum" in schema:
            return self.alt([{"const": v} for v in schema["enum"]], start)
        kind = schema.get("type")
        if isinstance(kind, list):
            return self.alt([{**schema, "type": k} for k in kind], start)
        return self._typed(kind, schema, start)

    def _typed(self, kind: Any, schema: dict[str, Any], start: int) -> int:
        if kind == "string":
            return self.string(start)
        if kind in ("integer", "number"):
            return self.number(start, fraction=kind == "number")
        if kind == "boolean":
            return self.alt([{"const": True}, {"const": False}], start)
        if kind == "null":
            return self.literal("null", start)
        if kind == "array" and isinstance(schema.get("items"), dict):
            return self.array(schema["items"], start)
        if kind in ("object", None) and schema.get("additionalProperties") is False:
            return self.obj(schema, start)
        return self.free(start)

    def literal(self, text: str, start: int) -> int:
        for ch in text:
            nxt = self.nfa._new()
            state = self.nfa.states[start]
            state.char, state.to = ch, nxt
            start = nxt
        return start

    def klass(self, pred: Predicate, hint: str, start: int) -> int:
        nxt = self.nfa._new()
        state = self.nfa.states[start]
        state.cls, state.cls_hint, state.to = pred, hint, nxt
        return nxt

    def eps(self, src: int, dst: int | None = None) -> int:
        dst = self.nfa._new() if dst is None else dst
        self.nfa.states[src].eps.append(dst)
        return dst

    def alt(self, options: list[Any], start: int) -> int:
        end = self.nfa._new()
        for option in options:
            self.eps(self.value(option, self.eps(start)), end)
        return end

    def star(self, body: Callable[[int], int], start: int) -> int:
        """Zero or more ``body``; the loop state is also the exit."""
        loop = self.eps(start)
        self.eps(body(self.eps(loop)), loop)
        return loop

    def string(self, start: int) -> int:
        def char(s: int) -> int:
            end = self.nfa._new()
            self.eps(self.klass(_string_char, "a", self.eps(s)), end)
            self.eps(self.klass(_any, "a", self.literal("\\", self.eps(s))), end)
            return end

        return self.literal('"', self.star(char, self.literal('"', start)))

    def number(self, start: int, *, fraction: bool) -> int:
        """``-``? then digits; a number may also hold ``.eE+-`` anywhere (a superset)."""
        signed = self.eps(start)
        self.eps(self.literal("-", self.eps(start)), signed)
        first = self.klass(str.isdigit, "0", self.eps(signed))
        more = _number_char if fraction else str.isdigit
        return self.star(lambda s: self.klass(more, "0", s), first)

    def free(self, start: int) -> int:
        """Anything at all: a sub-schema the oracle does not model forces nothing after it."""
        return self.star(lambda s: self.klass(_any, "!", s), start)

    def array(self, items: dict[str, Any], start: int) -> int:
        end = self.nfa._new()
        opened = self.literal("[", start)
        self.eps(self.literal("]", self.eps(opened)), end)

        def more(s: int) -> int:
            return self.value(items, self.literal(", ", s))

        last = self.star(more, self.value(items, self.eps(opened)))
        self.eps(self.literal("]", last), end)
        return end

    def obj(self, schema: dict[str, Any], start: int) -> int:
        props: dict[str, Any] = schema.get("properties", {})
        required = [k for k in props if k in set(schema.get("required", []))]
        optional = [k for k in props if k not in required]
        at = self.literal("{", start)
        for i, key in enumerate(required):
            at = self.member(key, props[key], self.literal(", ", at) if i else at)
        at = self._optional_members(optional, props, at, written=bool(required))
        return self.literal("}", at)

    def _optional_members(
        self, keys: list[str], props: dict[str, Any], start: int, *, written: bool
    ) -> int:
        """Any in-order subset of ``keys``, comma-separated after the first written key."""
        none_yet: int | None = None if written else start
        some: int | None = start if written else None
        for key in keys:
            new_none, new_some = self.nfa._new(), self.nfa._new()
            if none_yet is not None:
                self.eps(none_yet, new_none)
                self.eps(self.member(key, props[key], self.eps(none_yet)), new_some)
            if some is not None:
                self.eps(some, new_some)
                comma = self.literal(", ", self.eps(some))
                self.eps(self.member(key, props[key], comma), new_some)
            none_yet, some = (new_none if none_yet is not None else None), new_some
        end = self.nfa._new()
        for state in (none_yet, some):
            if state is not None:
                self.eps(state, end)
        return end

    def member(self, key: str, schema: Any, start: int) -> int:
        return self.value(schema, self.literal(json.dumps(key) + ": ", start))


def _string_char(ch: str) -> bool:
    return ch not in '"\\' and ch >= " " and ch != "\x7f"


def _number_char(ch: str) -> bool:
    return ch.isdigit() or ch in ".eE+-"


def _any(_ch: str) -> bool:
    return True


# -- walking the automaton --------------------------------------------------------------------


@dataclass(frozen=True)
class Forced:
    """What the schema forces next: ``text``, then either the end of the output
    (``complete``) or a choice among ``next_chars`` (class members shown by a typical one)."""

    text: str
    complete: bool
    next_chars: frozenset[str]


class Cursor:
    """A position in an ``Automaton``: the set of states the text so far can be in."""

    def __init__(self, nfa: Automaton, states: frozenset[int]) -> None:
        self._nfa = nfa
        self.states = states

    @property
    def alive(self) -> bool:
        """False once the text left the canonical form: nothing is forced from then on."""
        return bool(self.states)

    def feed(self, text: str) -> None:
        for ch in text:
            if not self.states:
                return
            self.states = self._step(self.states, ch)

    def kill(self) -> None:
        self.states = frozenset()

    def forced(self) -> Forced:
        chars: list[str] = []
        states = self.states
        while states:
            lits, hints = self._options(states)
            accepting = self._nfa.accept in states
            if hints or accepting or len(lits) != 1:
                complete = accepting and not lits and not hints
                # A class wins over literals: a string is judged by its typical first letter.
                return Forced("".join(chars), complete, frozenset(hints or lits))
            (ch,) = lits
            chars.append(ch)
            states = self._step(states, ch)
        return Forced("", False, frozenset())

    def _options(self, states: frozenset[int]) -> tuple[set[str], set[str]]:
        lits: set[str] = set()
        hints: set[str] = set()
        for s in states:
            state = self._nfa.states[s]
            if state.char is not None:
                lits.add(state.char)
            elif state.cls is not None:
                hints.add(state.cls_hint)
        return lits, hints

    def _step(self, states: frozenset[int], ch: str) -> frozenset[int]:
        table = self._nfa.states
        nxt = [
            st.to
            for st in (table[s] for s in states)
            if st.char == ch or (st.cls is not None and st.cls(ch))
        ]
        return self._nfa.closure(nxt)


# -- forced text → forced tokens --------------------------------------------------------------


@dataclass(frozen=True)
class Jump:
    tokens: list[int]
    complete: bool  # the output is finished after these tokens


class JumpForward:
    """One request's jump-forward: the cursor, and the tokens produced so far (chosen or
    forced) so that forced text continuing a word is tokenized together with it."""

    def __init__(
        self,
        cursor: Cursor,
        tokenize: Callable[[bytes], list[int]],
        piece: Callable[[int], bytes],
    ) -> None:
        self._cursor = cursor
        self._tokenize = tokenize  # text → ids, no BOS, special tokens not parsed
        self._piece = piece  # id → its bytes
        self._ids: list[int] = []
        self._pieces: list[bytes] = []
        self._tail = ""  # the last characters produced, to find the word being written

    @property
    def active(self) -> bool:
        return self._cursor.alive

    def observe(self, token: int, piece: bytes, text: str) -> None:
        self._ids.append(token)
        self._pieces.append(piece)
        self._tail = (self._tail + text)[-_TAIL:]
        self._cursor.feed(text)

    def stop(self) -> None:
        """Forcing failed (the grammar refused a token): decode one by one from here."""
        self._cursor.kill()

    def next(self, budget: int) -> Jump | None:
        """The tokens to feed now, or None to let the model choose the next one."""
        if not self._cursor.alive or budget <= 0:
            return None
        forced = self._cursor.forced()
        if not forced.text:
            return Jump([], True) if forced.complete else None
        ids = self._tokens_for(forced)
        if not ids:
            return None
        return Jump(ids[:budget], forced.complete and len(ids) <= budget)

    def _tokens_for(self, forced: Forced) -> list[int] | None:
        """The forced text's tokens as a whole-string tokenization would split them."""
        redo = self._tokens_to_redo(forced.text[0])
        head = b"".join(self._pieces[len(self._pieces) - redo :]) if redo else b""
        if not _is_utf8(head):
            # The model wrote bytes that are no UTF-8 (a replacement character in the text):
            # llama.cpp's tokenizer aborts the whole process on such input, so the forced
            # text is tokenized on its own.
            redo, head = 0, b""
        done = self._ids[len(self._ids) - redo :] if redo else []
        body = head + forced.text.encode()
        if forced.complete:
            ids = self._tokenize(body)
        else:  # keep only tokens that stay the same whatever character comes next
            ids = _common_prefix([self._tokenize(body + c.encode()) for c in forced.next_chars])
            ids = self._within(ids, len(body))
        # The word's tokens must stay what the model chose, or the forced ones are not what a
        # whole-string tokenization would give: then let the model go on by itself.
        return ids[redo:] if ids[:redo] == done else None

    def _within(self, ids: list[int], size: int) -> list[int]:
        """The leading ``ids`` whose bytes end at or before ``size``."""
        for i, token in enumerate(ids):
            size -= len(self._piece(token))
            if size < 0:
                return ids[:i]
        return ids

    def _tokens_to_redo(self, first: str) -> int:
        """How many trailing tokens hold the word that ``first`` would continue (0: none)."""
        tail = self._tail
        if not tail or _splits(tail[-1], first):
            return 0
        start = len(tail) - 1
        while start > 0 and not _splits(tail[start - 1], tail[start]):
            start -= 1
        need, count = len(tail[start:].encode()), 0
        while need > 0 and count < len(self._pieces):
            count += 1
            need -= len(self._pieces[-count])
        return count


_TAIL = 64


def _char_class(ch: str) -> int:
    if ch.isspace():
        return 0
    if ch.isalpha():
        return 1
    return 2 if ch.isdigit() else 3


def _splits(a: str, b: str) -> bool:
    """Whether a GPT-2-style pre-tokenizer always cuts between ``a`` and ``b``: before a space
    (which joins what follows it) and between letters, digits and punctuation."""
    ca, cb = _char_class(a), _char_class(b)
    return ca != 0 and (cb == 0 or ca != cb)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _common_prefix(lists: list[list[int]]) -> list[int]:
    first = lists[0] if lists else []
    for i, token in enumerate(first):
        if any(len(other) <= i or other[i] != token for other in lists[1:]):
            return first[:i]
    return first
