"""The llama.cpp backend: GGUF models through llama-cpp-python, with runtime LoRA swaps.

The decode loop is ``Llama.generate``'s, minus its per-token bookkeeping: ``Llama.eval`` for
each token and a C sampler chain; per token this module adds a dict lookup, UTF-8 assembly
and the stop-string scan. JSON schemas become a grammar that is only consulted to check the
sampled token (see ``_llama_sampling``), so constrained decoding runs at nearly full speed.

Prefix caching: the longest common token prefix of the KV cache and the new prompt is kept
and only the rest is evaluated. The KV cache depends on the active adapter, so each switch
stashes sequence 0's KV state under the adapter it was computed with and restores the new
adapter's stash (or starts empty): KV is never reused across adapters.

Log-probabilities are the model's raw ones: log-softmax over the full vocabulary of the
logits that produced each token, before grammar, temperature or top-p were applied.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np

from edge_agent.backends._json_grammar import schema_to_gbnf
from edge_agent.backends._llama_sampling import Grammar, Sampler
from edge_agent.backends.base import (
    Backend,
    Chunk,
    Done,
    FinishReason,
    GenerationRequest,
    Message,
    Timings,
    Usage,
)
from edge_agent.chat_template import CHATML_TEMPLATE, ChatTemplate
from edge_agent.errors import AdapterError, BackendError, InvalidAdapterError

if TYPE_CHECKING:
    from edge_agent.modelfile import BaseModelIdentity

logger = logging.getLogger(__name__)

KV_CACHE_TYPES = {
    "f32": llama_cpp.GGML_TYPE_F32,
    "f16": llama_cpp.GGML_TYPE_F16,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q5_1": llama_cpp.GGML_TYPE_Q5_1,
    "q5_0": llama_cpp.GGML_TYPE_Q5_0,
    "q4_1": llama_cpp.GGML_TYPE_Q4_1,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
    "iq4_nl": llama_cpp.GGML_TYPE_IQ4_NL,
}
MAX_STASHED_PREFIXES = 4  # KV stashes kept for inactive adapters, least recently used dropped

# llama.cpp logs to stderr by default; route it into `logging` at DEBUG so the CLI stays
# clean, and keep the last errors to explain a failed load.
_recent_errors: deque[str] = deque(maxlen=8)
_GGML_LOG_LEVEL_ERROR = 3


@llama_cpp.llama_log_callback
def _on_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    line = text.decode("utf-8", errors="replace").rstrip()
    if level == _GGML_LOG_LEVEL_ERROR and line:
        _recent_errors.append(line)
    logger.debug("%s", line)


llama_cpp.llama_log_set(_on_llama_log, ctypes.c_void_p(0))


@dataclass
class _KVStash:
    """One adapter's KV cache for sequence 0, and the tokens it holds."""

    tokens: np.ndarray
    state: ctypes.Array[ctypes.c_uint8]


class LlamaCppBackend(Backend):
    """A GGUF model loaded once; LoRA adapters load and switch without reloading it."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        flash_attn: bool = False,
        use_mmap: bool = True,
        use_mlock: bool = False,
        kv_cache_type: str = "f16",
        n_batch: int = 512,
        seed: int = 0,
    ) -> None:
        from edge_agent.modelfile import identity_of, read_header

        self._path = Path(model_path)
        header = read_header(self._path)  # a bad file fails here, before llama.cpp reads it
        self._identity = identity_of(header)
        self._name = str(header.metadata.get("general.name") or self._path.stem)
        self._seed = seed
        self._llama = _load_llama(
            self._path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_gpu_layers=n_gpu_layers,
            flash_attn=flash_attn,
            use_mmap=use_mmap,
            use_mlock=use_mlock,
            type_k=_kv_type(kv_cache_type),
            type_v=_kv_type(kv_cache_type),
            n_batch=n_batch,
        )
        self._template = self._chat_template(header.chat_template)
        self._vocab = self._llama._model.vocab
        self._n_vocab = self._llama.n_vocab()
        self._token_cache: dict[int, tuple[bytes, bool]] = {}
        self._grammars: dict[str, Grammar] = {}  # compiled once per schema
        self._adapters: dict[str, Any] = {}  # name -> llama_adapter_lora pointer
        self._active: str | None = None
        self._stashes: OrderedDict[str | None, _KVStash] = OrderedDict()

    # -- contract ---------------------------------------------------------------------------

    @property
    def identity(self) -> BaseModelIdentity:
        return self._identity

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def active_adapter(self) -> str | None:
        return self._active

    @property
    def n_ctx(self) -> int:
        return int(self._llama.n_ctx())

    def render_prompt(
        self, messages: Sequence[Message | dict[str, Any]], *, add_generation_prompt: bool = True
    ) -> str:
        """The exact prompt text this model sees; fine-tuning formats examples with it too."""
        dicts = [m.to_template_dict() if isinstance(m, Message) else m for m in messages]
        return self._template.render(dicts, add_generation_prompt=add_generation_prompt)

    def tokenize_prompt(self, messages: Sequence[Message | dict[str, Any]]) -> list[int]:
        text = self.render_prompt(messages)
        bos = self._template.bos_token
        # The template may already spell BOS; a second one shifts every position.
        add_bos = bool(self._llama._model.add_bos_token()) and not (bos and text.startswith(bos))
        tokens: list[int] = self._llama.tokenize(text.encode(), add_bos=add_bos, special=True)
        return tokens

    def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
        self._check_open()
        clock = _Clock(time.perf_counter())
        prompt = self.tokenize_prompt(request.messages)
        room = self.n_ctx - len(prompt)
        if room < 1:
            raise BackendError(
                f"the prompt is {len(prompt)} tokens but the context holds {self.n_ctx}; "
                "shorten the conversation or raise context_size"
            )
        grammar = self._grammar(request.json_schema)
        seed = self._seed if request.seed is None else request.seed
        sampler = Sampler(self._n_vocab, temperature=request.temperature, top_p=request.top_p,
                          seed=seed)  # fmt: skip
        try:
            cached = self._prefill(prompt)
            limit = min(request.max_tokens, room)
            yield from self._stream(sampler, grammar, request, limit, clock, (len(prompt), cached))
        finally:
            sampler.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        llama_cpp.llama_set_adapters_lora(self._llama.ctx, None, 0, None)
        for adapter in self._adapters.values():
            llama_cpp.llama_adapter_lora_free(adapter)
        self._adapters.clear()
        for grammar in self._grammars.values():
            grammar.close()
        self._grammars.clear()
        self._stashes.clear()
        self._llama.close()

    # -- adapters ---------------------------------------------------------------------------

    def load_adapter(self, name: str, path: Path) -> None:
        """Load a LoRA GGUF made for this base model; it stays inactive until ``use_adapter``."""
        from edge_agent.adapters.export import require_same_base

        self._check_open()
        if name in self._adapters:
            raise AdapterError(f"an adapter named {name!r} is already loaded; pick another name")
        path = Path(path)
        require_same_base(path, self._identity)  # llama.cpp checks only arch and shapes
        _recent_errors.clear()
        adapter = llama_cpp.llama_adapter_lora_init(self._llama.model, str(path).encode())
        if not adapter:
            raise InvalidAdapterError(
                f"llama.cpp could not load the adapter {path.name}: {_last_errors()}; "
                "re-export it with `edge-agent adapters export`"
            )
        self._adapters[name] = adapter

    def use_adapter(self, name: str | None) -> None:
        """Make ``name`` (or the bare base model, for None) the adapter for what follows."""
        self._check_open()
        if name is not None and name not in self._adapters:
            loaded = ", ".join(sorted(self._adapters)) or "none"
            raise AdapterError(f"no adapter named {name!r} is loaded (loaded: {loaded})")
        if name == self._active:
            return
        self._stash_kv()
        if name is None:
            llama_cpp.llama_set_adapters_lora(self._llama.ctx, None, 0, None)
        else:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapters[name])
            llama_cpp.llama_set_adapters_lora(
                self._llama.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)
            )
        self._active = name
        self._restore_kv(name)

    # -- internals --------------------------------------------------------------------------

    def _prefill(self, prompt: list[int]) -> int:
        """Evaluate the prompt, reusing the KV cache's common prefix; return how much was reused."""
        # At least the last prompt token is evaluated: its logits pick the first answer token.
        keep = min(self._common_prefix(prompt), len(prompt) - 1)
        memory = llama_cpp.llama_get_memory(self._llama.ctx)
        if keep and not llama_cpp.llama_memory_seq_rm(memory, -1, keep, -1):
            keep = 0  # e.g. recurrent models cannot cut their state: start over
            self._clear_kv()
        self._llama.n_tokens = keep
        self._eval(prompt[keep:])
        return keep

    def _eval(self, tokens: Sequence[int]) -> None:
        if self._closed:
            raise BackendError("the backend was closed during generation")
        try:
            self._llama.eval(tokens)
        except RuntimeError as exc:
            raise BackendError(f"llama.cpp failed to evaluate the prompt: {exc}") from exc

    def _stream(
        self,
        sampler: Sampler,
        grammar: Grammar | None,
        request: GenerationRequest,
        limit: int,
        clock: _Clock,
        counts: tuple[int, int],
    ) -> Iterator[Chunk]:
        text_of = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        stops = _StopScanner(request.stop)
        ctx, want_logprobs, token_cache = self._llama.ctx, request.logprobs, self._token_cache
        finish: FinishReason = "length"
        n = 0
        while n < limit:
            token = sampler.sample(ctx, grammar)
            clock.first_token()
            piece, is_eog = token_cache.get(token) or self._token_info(token)
            if is_eog:
                finish = "stop"
                break
            n += 1
            logprob = (self._logprob(token),) if want_logprobs else ()
            text, stopped = stops.feed(text_of(piece))
            yield Chunk(text, (token,), logprob)
            if stopped:
                finish = "stop"
                break
            if n < limit:  # the last token's KV is only needed by a next request: skip it
                self._eval((token,))
        tail = "" if stops.stopped else stops.feed(text_of(b"", True))[0]
        n_prompt, cached = counts
        usage = Usage(prompt_tokens=n_prompt, completion_tokens=n, cached_prompt_tokens=cached)
        yield Done(tail + stops.flush(), finish_reason=finish, usage=usage, timings=clock.done())

    def _token_info(self, token: int) -> tuple[bytes, bool]:
        buf = ctypes.create_string_buffer(256)
        size = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        info = (buf.raw[: max(size, 0)], bool(llama_cpp.llama_vocab_is_eog(self._vocab, token)))
        self._token_cache[token] = info
        return info

    def _logprob(self, token: int) -> float:
        raw = llama_cpp.llama_get_logits_ith(self._llama.ctx, -1)
        logits = np.ctypeslib.as_array(raw, shape=(self._n_vocab,))
        top = float(logits.max())
        return float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))

    def _grammar(self, schema: dict[str, Any] | None) -> Grammar | None:
        if schema is None:
            return None
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            try:
                gbnf = schema_to_gbnf(schema)
            except (AssertionError, ValueError, KeyError, TypeError) as exc:
                raise BackendError(f"cannot constrain output to this JSON schema: {exc}") from exc
            grammar = self._grammars[key] = Grammar(self._vocab, gbnf)
        grammar.reset()
        return grammar

    def _common_prefix(self, prompt: list[int]) -> int:
        held = self._llama.input_ids[: self._llama.n_tokens]
        width = min(len(held), len(prompt))
        if width == 0:
            return 0
        diff = np.flatnonzero(held[:width] != np.asarray(prompt[:width], dtype=held.dtype))
        return int(diff[0]) if diff.size else width

    def _stash_kv(self) -> None:
        """Save sequence 0's KV under the adapter that computed it, then empty the cache."""
        n = self._llama.n_tokens
        ctx = self._llama.ctx
        if n > 0:
            size = llama_cpp.llama_state_seq_get_size(ctx, 0)
            state = (ctypes.c_uint8 * size)()
            written = llama_cpp.llama_state_seq_get_data(ctx, state, size, 0)
            if written:
                self._stashes[self._active] = _KVStash(self._llama.input_ids[:n].copy(), state)
                self._stashes.move_to_end(self._active)
            while len(self._stashes) > MAX_STASHED_PREFIXES:
                self._stashes.popitem(last=False)
        self._clear_kv()

    def _restore_kv(self, name: str | None) -> None:
        stash = self._stashes.pop(name, None)
        if stash is None:
            return
        ctx = self._llama.ctx
        if not llama_cpp.llama_state_seq_set_data(ctx, stash.state, len(stash.state), 0):
            self._clear_kv()  # a cold cache is slower, never wrong
            return
        n = len(stash.tokens)
        self._llama.input_ids[:n] = stash.tokens
        self._llama.n_tokens = n

    def _clear_kv(self) -> None:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._llama.ctx), True)
        self._llama.n_tokens = 0

    def _chat_template(self, source: str | None) -> ChatTemplate:
        model = self._llama._model
        bos, eos = model.token_bos(), model.token_eos()
        return ChatTemplate(
            source or CHATML_TEMPLATE,
            bos_token=model.token_get_text(bos) if bos >= 0 else "",
            eos_token=model.token_get_text(eos) if eos >= 0 else "",
        )


class _Clock:
    def __init__(self, started: float) -> None:
        self._started = started
        self._first: float | None = None

    def first_token(self) -> None:
        if self._first is None:
            self._first = time.perf_counter()

    def done(self) -> Timings:
        now = time.perf_counter()
        first = self._first or now
        first_ms = (first - self._started) * 1000
        decode_ms = (now - first) * 1000
        return Timings(prompt_ms=first_ms, decode_ms=decode_ms, first_token_ms=first_ms)


class _StopScanner:
    """Holds back text that could be the start of a stop string until it is decided."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._held, self.stopped = "", True
            return buf[: min(hits)], True
        keep = max(_overlap(buf, s) for s in self._stops)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0


def _kv_type(name: str) -> int:
    try:
        return int(KV_CACHE_TYPES[name])
    except KeyError:
        raise BackendError(
            f"unknown kv_cache_type {name!r}; choose one of: {', '.join(KV_CACHE_TYPES)}"
        ) from None


def _load_llama(path: Path, **options: Any) -> llama_cpp.Llama:
    _recent_errors.clear()
    try:
        return llama_cpp.Llama(model_path=str(path), verbose=False, **options)
    except (ValueError, RuntimeError, OSError) as exc:
        raise BackendError(
            f"llama.cpp could not load {path.name}: {_last_errors() or exc}; "
            "check the file, or lower context_size / n_gpu_layers if memory is short"
        ) from exc


def _last_errors() -> str:
    return " / ".join(_recent_errors)
