"""Token sampling for the llama.cpp backend, with grammar checks that cost ~nothing.

llama-cpp-python puts the grammar inside the sampler chain, so every step runs the grammar
over the whole vocabulary (49k tokens for SmolLM2): with a tool-call schema that is slower
than the model itself. Here, as in llama.cpp's own ``common_sampler``, the token is sampled
unconstrained first and only checked against the grammar; only a rejected token triggers the
full-vocabulary grammar pass. The result is the same distribution: a valid token keeps
probability p(t) + (1 - S) p(t) / S = p(t) / S, S being the valid tokens' total mass.
"""

from __future__ import annotations

import ctypes
import math
import weakref

import llama_cpp
import numpy as np

from edge_agent.errors import BackendError, UnsupportedSchemaError

_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


class Grammar:
    """A compiled GBNF grammar sampler, reusable across requests (reset before each). It is
    freed by ``close`` or, once dropped from a cache, when the last request using it ends."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p, gbnf: str) -> None:
        self.handle = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        if not self.handle:
            raise UnsupportedSchemaError(
                "cannot constrain output to this JSON schema: llama.cpp could not compile its "
                "grammar (see the debug log)"
            )
        self._free = weakref.finalize(self, llama_cpp.llama_sampler_free, self.handle)
        # One-token candidate array for the cheap validity check.
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(self._one, 1, -1, False)

    def reset(self) -> None:
        llama_cpp.llama_sampler_reset(self.handle)

    def allows(self, token: int) -> bool:
        self._one[0] = llama_cpp.llama_token_data(token, 1.0, 0.0)
        self._one_array.size, self._one_array.selected = 1, -1
        llama_cpp.llama_sampler_apply(self.handle, ctypes.byref(self._one_array))
        return not math.isinf(self._one[0].logit)

    def accept(self, token: int) -> None:
        """Advance the grammar past ``token`` (which ``allows`` must have passed)."""
        llama_cpp.llama_sampler_accept(self.handle, token)

    def close(self) -> None:
        self._free()  # runs once, however often it is called
        self.handle = None


class Sampler:
    """One request's sampler chain (greedy, or top-p + temperature + seeded draw)."""

    def __init__(self, n_vocab: int, *, temperature: float, top_p: float, seed: int) -> None:
        self._chain = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        for stage in _stages(temperature, top_p, seed):
            llama_cpp.llama_sampler_chain_add(self._chain, stage)
        self._n_vocab = n_vocab
        self._candidates: np.ndarray | None = None  # allocated on the first grammar rejection
        self._array: llama_cpp.llama_token_data_array | None = None

    def sample(
        self, ctx: llama_cpp.llama_context_p, grammar: Grammar | None, index: int = -1
    ) -> int:
        """The next token from the logits of batch position ``index`` (the last by default)."""
        token = int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))
        if grammar is None:
            return token
        if not grammar.allows(token):
            token = self._constrained(ctx, grammar, index)
        llama_cpp.llama_sampler_accept(grammar.handle, token)
        return token

    def _constrained(self, ctx: llama_cpp.llama_context_p, grammar: Grammar, index: int) -> int:
        data, array = self._full_array(ctx, index)
        llama_cpp.llama_sampler_apply(grammar.handle, ctypes.byref(array))
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(array))
        if math.isinf(data["logit"][array.selected]):
            raise BackendError("the JSON schema grammar allows no next token; simplify the schema")
        token = int(data["id"][array.selected])
        llama_cpp.llama_sampler_accept(self._chain, token)
        return token

    def _full_array(
        self, ctx: llama_cpp.llama_context_p, index: int
    ) -> tuple[np.ndarray, llama_cpp.llama_token_data_array]:
        if self._candidates is None or self._array is None:
            self._candidates = np.zeros(self._n_vocab, dtype=_TOKEN_DATA)
            pointer = self._candidates.ctypes.data_as(llama_cpp.llama_token_data_p)
            self._array = llama_cpp.llama_token_data_array(pointer, self._n_vocab, -1, False)
        logits = llama_cpp.llama_get_logits_ith(ctx, index)
        self._candidates["id"] = np.arange(self._n_vocab, dtype=np.intc)
        self._candidates["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        self._candidates["p"] = 0.0
        self._array.size, self._array.selected, self._array.sorted = self._n_vocab, -1, False
        return self._candidates, self._array

    def close(self) -> None:
        if self._chain:
            llama_cpp.llama_sampler_free(self._chain)  # frees the stages it owns too
            self._chain = None


def _stages(temperature: float, top_p: float, seed: int) -> list[llama_cpp.llama_sampler_p]:
    if temperature == 0.0:
        return [llama_cpp.llama_sampler_init_greedy()]
    stages = [llama_cpp.llama_sampler_init_top_p(top_p, 1)] if top_p < 1.0 else []
    return [
        *stages,
        llama_cpp.llama_sampler_init_temp(temperature),
        llama_cpp.llama_sampler_init_dist(seed),
    ]
