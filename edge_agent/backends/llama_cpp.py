"""The llama.cpp backend: GGUF models through llama-cpp-python, with runtime LoRA swaps.

Prompts, prefix reuse and the decode loop follow ``_prompted.PromptedBackend``; a step here
is ``Llama.generate``'s minus its per-token bookkeeping: ``Llama.eval`` for each token and a
C sampler chain, plus a dict lookup and UTF-8 assembly (the loop adds the stop-string scan).
JSON schemas become a grammar that is only consulted to check the sampled token (see
``_llama_sampling``), so constrained decoding runs at nearly full speed, and text the schema
forces is fed in one batch instead of decoded (see ``_jump_forward``), and text the prompt
suggests is guessed and checked in that batch too (see ``_prompt_lookup``).

Prefix caching: the longest common token prefix of the KV cache and the new prompt is kept
and only the rest is evaluated. The KV cache depends on the active adapter, so each switch
stashes sequence 0's KV state under the adapter it was computed with and restores the new
adapter's stash (or starts empty): KV is never reused across adapters.

Log-probabilities are the model's raw ones: log-softmax over the full vocabulary of the
logits that produced each token, before grammar, temperature or top-p were applied; a token
forced by jump-forward was not chosen and gets 0.0.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np

from edge_agent.backends._chat_template import ChatTemplate, check_templates, fallback_template
from edge_agent.backends._json_grammar import schema_to_gbnf
from edge_agent.backends._jump_forward import Automaton, JumpForward
from edge_agent.backends._llama_sampling import Grammar, Sampler
from edge_agent.backends._prompt_lookup import PromptLookup
from edge_agent.backends._prompted import (
    CLOSED_MID_STREAM,
    PromptedBackend,
    Run,
    Step,
    reusable_prefix,
)
from edge_agent.backends._schema_limits import bounded_schema
from edge_agent.backends._streaming import Clock, log_softmax_at
from edge_agent.backends.base import GenerationRequest
from edge_agent.errors import BackendError, InvalidAdapterError
from edge_agent.models import llama_log

if TYPE_CHECKING:
    from edge_agent.models.gguf import BaseModelIdentity

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
# Compiled grammars and jump-forward oracles kept, one per schema, least recently used dropped:
# clients may send a new schema with every request (125 large enums cost 870 MB unbounded).
MAX_CACHED_SCHEMAS = 16
# Draft tokens guessed from the prompt per decode step (0: off). A guess costs its batch
# position and its logits (2.5-4.5 ms for SmolLM2-135M on this 2-core x86 box) and saves a
# decode step (~8.5 ms) per token the model confirms; home calls confirm ~40 % of guesses,
# so here it about breaks even (scripts/bench/bench_turn.py) and the profiles leave it off.
DRAFT_TOKENS = 0
_CONTROL = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN


@dataclass
class _KVStash:
    """One adapter's KV cache for sequence 0, and the tokens it holds."""

    tokens: np.ndarray
    state: ctypes.Array[ctypes.c_uint8]


class _Run(Run):
    """One request's sampler, schema constraints and tokens still to evaluate."""

    def __init__(
        self,
        clock: Clock,
        cached: int,
        request: GenerationRequest,
        *,
        sampler: Sampler,
        constraints: tuple[Grammar | None, JumpForward | None],
        pending: list[int],
        lookup: PromptLookup | None,
    ) -> None:
        super().__init__(clock, cached, request.logprobs)
        self.sampler = sampler
        self.grammar, self.jump = constraints
        self.batch = pending  # tokens whose KV is still to compute: the prompt's rest, then ours
        self.lookup = lookup  # draft tokens from the prompt; None: greedy decoding is off
        self.text_of = codecs.getincrementaldecoder("utf-8")(errors="replace").decode

    def flush(self) -> str:
        return self.text_of(b"", True)

    def close(self) -> None:
        self.sampler.close()


class LlamaCppBackend(PromptedBackend[_Run]):
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
        jump_forward: bool = True,
        draft_tokens: int = DRAFT_TOKENS,
    ) -> None:
        from edge_agent.models.gguf import identity_of, read_header

        super().__init__()
        self._path = Path(model_path)
        header = read_header(self._path)  # a bad file fails here, before llama.cpp reads it
        check_templates(header.chat_templates)  # llama-cpp-python compiles them all on load
        self._identity = identity_of(header)
        self._name = str(header.metadata.get("general.name") or self._path.stem)
        self._seed = seed
        self.jump_forward = jump_forward  # feed schema-forced text in one batch; see module doc
        self.draft_tokens = draft_tokens  # prompt-lookup guesses per step; see module doc
        self._llama, self.kv_cache_type = _load_with_kv(
            self._path,
            kv_cache_type,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_gpu_layers=n_gpu_layers,
            flash_attn=flash_attn,
            use_mmap=use_mmap,
            use_mlock=use_mlock,
            n_batch=n_batch,
        )
        self._template = self._chat_template(header.chat_template)
        self._vocab = self._llama._model.vocab
        self._n_vocab = self._llama.n_vocab()
        self._token_cache: dict[int, tuple[bytes, bool]] = {}
        self._logprob_buf = np.empty(self._n_vocab, dtype=np.float32)
        self._grammars: OrderedDict[str, Grammar] = OrderedDict()  # compiled once per schema
        self._automata: OrderedDict[str, Automaton | None] = OrderedDict()  # jump-forward oracles
        self._control_texts = self._control_token_texts()
        self._stashes: OrderedDict[str | None, _KVStash] = OrderedDict()

    @property
    def identity(self) -> BaseModelIdentity:
        return self._identity

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def n_ctx(self) -> int:
        return int(self._llama.n_ctx())

    # -- prompt and decoding ----------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        bos = self._template.bos_token
        # The template may already spell BOS; a second one shifts every position.
        add_bos = bool(self._llama._model.add_bos_token()) and not (bos and text.startswith(bos))
        tokens: list[int] = self._llama.tokenize(text.encode(), add_bos=add_bos, special=True)
        return tokens

    def _encode_text(self, text: str, *, special: bool) -> list[int]:
        tokens: list[int] = self._llama.tokenize(text.encode(), add_bos=False, special=special)
        return tokens

    def _control_token_texts(self) -> tuple[str, ...]:
        """The text of each token that ``special=True`` parses (llama.cpp's control and
        unknown tokens); one pass over the vocabulary, about 15 ms for SmolLM2's 49k."""
        model = self._llama._model
        return tuple(
            text
            for token in range(self._n_vocab)
            if llama_cpp.llama_vocab_get_attr(self._vocab, token) & _CONTROL
            and (text := model.token_get_text(token))
        )

    def _start(self, request: GenerationRequest, prompt: list[int], clock: Clock) -> _Run:
        constraints = self._constraints(request.json_schema)
        cached = self._reuse_prefix(prompt)
        seed = self._seed if request.seed is None else request.seed
        sampler = Sampler(self._n_vocab, temperature=request.temperature, top_p=request.top_p,
                          seed=seed)  # fmt: skip
        pending = prompt[cached:]
        lookup = self._lookup(request)
        return _Run(clock, cached, request, sampler=sampler, constraints=constraints,
                    pending=pending, lookup=lookup)  # fmt: skip

    def _lookup(self, request: GenerationRequest) -> PromptLookup | None:
        """A drafter for greedy requests: a guess is kept only where it is the model's own
        pick, which sampling at a temperature would not preserve."""
        if self.draft_tokens <= 0 or request.temperature > 0:
            return None
        source = "\n".join(m.content for m in request.messages if isinstance(m.content, str))
        return PromptLookup(source, self._tokenize_text, max_tokens=self.draft_tokens)

    def _step(self, run: _Run, budget: int) -> Step | None:
        """Forced tokens fed without the model when the schema allows, else the model's pick;
        evaluation is deferred so forced tokens go in one batch with the next pick's input."""
        if run.jump is not None:
            forced = self._forced(run, budget)
            if forced is not None:
                run.batch += forced.tokens
                self._written(run, forced.text)
                return forced
        draft = self._draft(run, budget)
        if draft:
            return self._verify(run, draft, budget)
        self._eval(run.batch)
        token = run.sampler.sample(self._llama.ctx, run.grammar)
        run.clock.first_token()
        piece, is_eog = self._token_cache.get(token) or self._token_info(token)
        if is_eog:
            return None
        run.batch = [token]  # its KV is only needed by a next step or request
        text = run.text_of(piece)
        if run.jump is not None:
            run.jump.observe(token, piece, text)
        self._written(run, text)
        return Step((token,), text, (self._logprob(token),) if run.logprobs else ())

    # -- prompt-lookup drafts -----------------------------------------------------------------

    def _draft(self, run: _Run, budget: int) -> list[int]:
        if run.lookup is None or len(run.batch) + run.lookup.max_tokens > self._llama.n_batch:
            return []
        return run.lookup.propose(budget - 1)  # the model's own pick follows the guesses

    def _verify(self, run: _Run, draft: list[int], budget: int) -> Step | None:
        """Evaluate the pending tokens and the guesses in one batch; keep each guess the
        model picks at its position (greedy, under the grammar), then the model's own pick
        after the last kept one, unless the schema forces what follows a kept guess: that
        is jump-forward's to feed (as 0.0-logprob tokens), as without guesses. Only the
        last token is left pending, so the state after is a plain step's."""
        base = self._llama.n_tokens + len(run.batch)  # where the first guess sits
        first = len(run.batch)  # batch index whose logits pick the first token
        self._eval_outputs(run.batch + draft, len(draft) + 1)
        tokens: list[int] = []
        texts: list[str] = []
        logprobs: list[float] = []
        for i in range(len(draft) + 1):
            token = run.sampler.sample(self._llama.ctx, run.grammar, first - 1 + i)
            run.clock.first_token()
            piece, is_eog = self._token_cache.get(token) or self._token_info(token)
            if is_eog:
                break
            tokens.append(token)
            texts.append(run.text_of(piece))
            if run.jump is not None:
                run.jump.observe(token, piece, texts[-1])
            if run.logprobs:
                logprobs.append(self._logprob(token, first - 1 + i))
            if i == len(draft) or token != draft[i] or self._forcing(run, budget - i - 1):
                break
        self._cut_kv(base + max(len(tokens) - 1, 0))
        assert run.lookup is not None
        run.lookup.accepted += sum(t == d for t, d in zip(tokens, draft, strict=False))
        if not tokens:
            return None
        run.batch = [tokens[-1]]
        self._written(run, "".join(texts))
        return Step(tuple(tokens), "".join(texts), tuple(logprobs), complete=is_eog)

    def _forcing(self, run: _Run, budget: int) -> bool:
        return run.jump is not None and run.jump.next(budget) is not None

    def _written(self, run: _Run, text: str) -> None:
        if run.lookup is not None:
            run.lookup.observe(text)

    def _eval_outputs(self, tokens: Sequence[int], n_out: int) -> None:
        """``Llama.eval`` of one batch, with logits for its last ``n_out`` positions."""
        if self._closed:
            raise BackendError(CLOSED_MID_STREAM)
        llm = self._llama
        n_past = llm.n_tokens
        llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
        llm._batch.set_batch(batch=tokens, n_past=n_past, logits_all=False)
        for i in range(len(tokens) - n_out, len(tokens)):
            llm._batch.batch.logits[i] = True
        try:
            llm._ctx.decode(llm._batch)
        except RuntimeError as exc:
            raise BackendError(f"llama.cpp failed to evaluate the prompt: {exc}") from exc
        llm.input_ids[n_past : n_past + len(tokens)] = tokens
        llm.n_tokens = n_past + len(tokens)

    def _cut_kv(self, keep: int) -> None:
        """Drop the KV of positions from ``keep`` on: guesses the model did not confirm."""
        memory = llama_cpp.llama_get_memory(self._llama.ctx)
        llama_cpp.llama_memory_seq_rm(memory, -1, keep, -1)
        self._llama.n_tokens = keep

    def _reuse_prefix(self, prompt: list[int]) -> int:
        """Keep the KV cache's common prefix with the prompt; return its length. The rest is
        evaluated by the first ``_step``, in one batch with any text the schema forces first."""
        keep = reusable_prefix(self._llama.input_ids[: self._llama.n_tokens], prompt)
        memory = llama_cpp.llama_get_memory(self._llama.ctx)
        if keep and not llama_cpp.llama_memory_seq_rm(memory, -1, keep, -1):
            keep = 0  # e.g. recurrent models cannot cut their state: start over
            self._clear_kv()
        self._llama.n_tokens = keep
        return keep

    def _eval(self, tokens: Sequence[int]) -> None:
        if self._closed:
            raise BackendError(CLOSED_MID_STREAM)
        try:
            self._llama.eval(tokens)
        except RuntimeError as exc:
            raise BackendError(f"llama.cpp failed to evaluate the prompt: {exc}") from exc

    def _forced(self, run: _Run, budget: int) -> Step | None:
        """The tokens the schema forces now, each checked against and accepted into the grammar;
        None when the model must choose."""
        assert run.jump is not None and run.grammar is not None
        plan = run.jump.next(budget)
        if plan is None:
            return None
        taken: list[int] = []
        texts: list[str] = []
        for token in plan.tokens:
            if not run.grammar.allows(token):  # the oracle and the grammar disagree: decode
                run.jump.stop()
                break
            run.grammar.accept(token)
            piece = self._piece(token)
            texts.append(run.text_of(piece))
            run.jump.observe(token, piece, texts[-1])
            taken.append(token)
        complete = plan.complete and len(taken) == len(plan.tokens)
        if not taken and not complete:
            return None
        logprobs = (0.0,) * len(taken) if run.logprobs else ()  # forced, not chosen
        return Step(tuple(taken), "".join(texts), logprobs, complete)

    def _token_info(self, token: int) -> tuple[bytes, bool]:
        """The token's text bytes and whether it ends generation, computed once per token id."""
        buf = ctypes.create_string_buffer(64)
        size = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if size < 0:  # a longer piece: llama.cpp reports the size it needs
            buf = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        info = (buf.raw[: max(size, 0)], bool(llama_cpp.llama_vocab_is_eog(self._vocab, token)))
        self._token_cache[token] = info
        return info

    def _logprob(self, token: int, index: int = -1) -> float:
        raw = llama_cpp.llama_get_logits_ith(self._llama.ctx, index)
        logits = np.ctypeslib.as_array(raw, shape=(self._n_vocab,))
        return log_softmax_at(logits, token, self._logprob_buf)

    def _constraints(
        self, schema: dict[str, Any] | None
    ) -> tuple[Grammar | None, JumpForward | None]:
        """The schema's grammar (reset) and, with jump-forward on, a fresh oracle walk."""
        if schema is None:
            return None, None
        key = json.dumps(schema, sort_keys=True)
        grammar = _recall(self._grammars, key)
        bounded = None  # checked once per schema: a cached key passed the limits already
        if grammar is None:
            bounded = bounded_schema(schema)  # UnsupportedSchemaError names the limit passed
            grammar = Grammar(self._vocab, schema_to_gbnf(bounded))
            _remember(self._grammars, key, grammar)  # a dropped one is freed when unused
        grammar.reset()
        if not self.jump_forward:
            return grammar, None
        if key not in self._automata:
            _remember(self._automata, key, _oracle(bounded or bounded_schema(schema)))
        automaton = _recall(self._automata, key)
        if automaton is None:
            return grammar, None
        return grammar, JumpForward(automaton.cursor(), self._tokenize_text, self._piece)

    def _tokenize_text(self, text: bytes) -> list[int]:
        # llama.cpp's tokenizer aborts the process on bytes that are no UTF-8
        safe = text.decode("utf-8", errors="replace").encode()
        tokens: list[int] = self._llama.tokenize(safe, add_bos=False, special=False)
        return tokens

    def _piece(self, token: int) -> bytes:
        return (self._token_cache.get(token) or self._token_info(token))[0]

    def _drop_cache(self) -> None:
        self._clear_kv()

    def _release(self) -> None:
        llama_cpp.llama_set_adapters_lora(self._llama.ctx, None, 0, None)
        for adapter in self._loaded.values():
            llama_cpp.llama_adapter_lora_free(adapter)
        self._loaded.clear()
        for grammar in self._grammars.values():
            grammar.close()
        self._grammars.clear()
        self._stashes.clear()
        self._llama.close()

    # -- adapters ---------------------------------------------------------------------------

    def _load_adapter(self, name: str, path: Path) -> Any:
        """A LoRA GGUF made for this base model, as a llama_adapter_lora pointer."""
        from edge_agent.lora.gguf import require_same_base

        require_same_base(path, self._identity)  # llama.cpp checks only arch and shapes
        llama_log.recent_errors.clear()
        adapter = llama_cpp.llama_adapter_lora_init(self._llama.model, str(path).encode())
        if not adapter:
            raise InvalidAdapterError(
                f"llama.cpp could not load the adapter {path.name}: {_last_errors()}; "
                "pull it again (`edge-agent adapters pull`) or re-export it on the host"
            )
        return adapter

    def _apply_adapter(self, name: str | None) -> None:
        self._stash_kv()
        if name is None:
            llama_cpp.llama_set_adapters_lora(self._llama.ctx, None, 0, None)
        else:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._loaded[name])
            llama_cpp.llama_set_adapters_lora(
                self._llama.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)
            )
        self._restore_kv(name)

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
            source or fallback_template(self._identity.architecture),
            bos_token=model.token_get_text(bos) if bos >= 0 else "",
            eos_token=model.token_get_text(eos) if eos >= 0 else "",
        )


def _recall(cache: OrderedDict[str, Any], key: str) -> Any:
    if key in cache:
        cache.move_to_end(key)
    return cache.get(key)


def _remember(cache: OrderedDict[str, Any], key: str, value: Any) -> None:
    cache[key] = value
    while len(cache) > MAX_CACHED_SCHEMAS:
        cache.popitem(last=False)


def _oracle(schema: dict[str, Any]) -> Automaton | None:
    """The schema's jump-forward oracle, or None (decode token by token) for a schema it
    cannot follow: jump-forward only saves time, the grammar alone keeps the output valid."""
    try:
        return Automaton(schema)
    except Exception:
        logger.debug("no jump-forward oracle for this schema", exc_info=True)
        return None


def _kv_type(name: str) -> int:
    try:
        return int(KV_CACHE_TYPES[name])
    except KeyError:
        raise BackendError(
            f"unknown kv_cache_type {name!r}; choose one of: {', '.join(KV_CACHE_TYPES)}"
        ) from None


def _load_with_kv(path: Path, kv_cache_type: str, **options: Any) -> tuple[llama_cpp.Llama, str]:
    """The model with its KV cache in ``kv_cache_type``, or in f16 where llama.cpp cannot
    quantize this model's cache (a q8_0 row is whole 32-value blocks: heads narrower than
    that are refused) — a bigger cache, never a device that cannot start."""
    kv = _kv_type(kv_cache_type)
    try:
        return _load_llama(path, type_k=kv, type_v=kv, **options), kv_cache_type
    except BackendError:
        if kv_cache_type == "f16":
            raise
    logger.info("%s: no %s KV cache for this model; using f16", path.name, kv_cache_type)
    f16 = _kv_type("f16")
    return _load_llama(path, type_k=f16, type_v=f16, **options), "f16"


def _load_llama(path: Path, **options: Any) -> llama_cpp.Llama:
    llama_log.recent_errors.clear()
    try:
        return llama_cpp.Llama(model_path=str(path), verbose=False, **options)
    except (ValueError, RuntimeError, OSError) as exc:
        raise BackendError(
            f"llama.cpp could not load {path.name}: {_last_errors() or exc}; "
            "check the file, or lower context_size / n_gpu_layers if memory is short"
        ) from exc


def _last_errors() -> str:
    return llama_log.last_errors()
