"""Frozen-prefix cache: the hidden states entering the first LoRA layer, computed once per
example, so training runs only the layers the adapter changes.

With LoRA on layers ``start`` and above, the embeddings and layers below ``start`` never
change during training, yet the plain loop recomputed them at every step (about 60 % of a
step for SmolLM2 with LoRA on its top 12 of 30 layers). Here they run once, without
gradients; each step then feeds the cached states to the top layers. The top layers are
the model's own modules, given the causal mask and rotary embeddings exactly as
``LlamaModel.forward`` builds them, so the loss is the uncached loss (tested to float
tolerance; Gemma 3's sliding-window and full layers each get their own mask and rotary
embeddings, as ``Gemma3TextModel.forward`` gives them). Right padding keeps this exact: a real
token never attends to a later position, so its states do not depend on the batch it was
cached in.

The cache is saved under the run directory (safetensors) with a fingerprint of the model
file, the boundary and the examples, so a resumed run reloads it instead of rebuilding it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.host.examples import Example

if TYPE_CHECKING:
    import torch

CACHE_BATCH = 16  # examples per no-grad forward while building: longer, fewer calls


def run_layers(decoder: Any, hidden: torch.Tensor, attention_mask: torch.Tensor,
               layers: slice) -> torch.Tensor:  # fmt: skip
    """`hidden` through `decoder.layers[layers]`, with the mask and rotary embeddings built
    as `LlamaModel.forward` builds them (positions from 0: right padding, no KV cache)."""
    import torch
    from transformers.masking_utils import create_causal_mask

    position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    if "sliding_attention" in (getattr(decoder.config, "layer_types", None) or ()):
        return _run_typed_layers(decoder, hidden, attention_mask, layers, position_ids)
    mask = create_causal_mask(config=decoder.config, inputs_embeds=hidden,
                              attention_mask=attention_mask, cache=None,
                              position_ids=position_ids)  # fmt: skip
    position_embeddings = decoder.rotary_emb(hidden, position_ids=position_ids)
    for layer in decoder.layers[layers]:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=position_embeddings,
                       position_ids=position_ids)  # fmt: skip
    return hidden


def _run_typed_layers(decoder: Any, hidden: torch.Tensor, attention_mask: torch.Tensor,
                      layers: slice, position_ids: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """As `run_layers`, for models mixing sliding-window and full attention layers (Gemma 3):
    each layer gets its type's mask and rotary embeddings, as `Gemma3TextModel.forward` does."""
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    args = {"config": decoder.config, "inputs_embeds": hidden, "attention_mask": attention_mask,
            "cache": None, "position_ids": position_ids}  # fmt: skip
    masks = {"full_attention": create_causal_mask(**args),
             "sliding_attention": create_sliding_window_causal_mask(**args)}  # fmt: skip
    types = decoder.config.layer_types
    rope = {kind: decoder.rotary_emb(hidden, position_ids, kind) for kind in set(types)}
    for i in range(len(decoder.layers))[layers]:
        hidden = decoder.layers[i](hidden, attention_mask=masks[types[i]],
                                   position_embeddings=rope[types[i]],
                                   position_ids=position_ids)  # fmt: skip
    return hidden


def top_hidden(decoder: Any, states: torch.Tensor, attention_mask: torch.Tensor,
               start: int) -> torch.Tensor:  # fmt: skip
    """The final normed hidden states from cached states entering layer `start`."""
    return decoder.norm(run_layers(decoder, states, attention_mask, slice(start, None)))


def _pad(rows: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    import torch

    out = torch.zeros((len(rows), width, rows[0].shape[-1]), dtype=torch.float32)
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row.float()
    return out


class PrefixCache:
    """Per example, the states entering layer `start` (real tokens only, no padding)."""

    def __init__(self, start: int, states: list[torch.Tensor]) -> None:
        self.start, self.states = start, states

    def batch(self, indices: Sequence[int], width: int) -> torch.Tensor:
        """Right-padded float32 states for these examples, `width` positions wide (the pad
        positions are zeros: only pad positions ever see them)."""
        return _pad([self.states[i] for i in indices], width)

    @property
    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.states)

    @classmethod
    def build(cls, decoder: Any, examples: Sequence[Example], start: int, *,
              dtype: str = "float32") -> PrefixCache:  # fmt: skip
        """Embeddings + layers below `start`, once, in length-sorted no-grad batches."""
        import torch

        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        states: list[torch.Tensor | None] = [None] * len(examples)
        with torch.no_grad():
            for at in range(0, len(order), CACHE_BATCH):
                part = order[at : at + CACHE_BATCH]
                ids, mask = _ids_and_mask([examples[i] for i in part])
                hidden = run_layers(decoder, decoder.embed_tokens(ids), mask, slice(0, start))
                for row, i in enumerate(part):
                    n = len(examples[i].input_ids)
                    states[i] = hidden[row, :n].to(getattr(torch, dtype)).clone()
        return cls(start, [s for s in states if s is not None])

    def save(self, path: Path, fingerprint: str) -> Path:
        from safetensors.torch import save_file

        tensors = {str(i): s.contiguous() for i, s in enumerate(self.states)}
        meta = {"fingerprint": fingerprint, "start": str(self.start)}
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> PrefixCache | None:
        """The saved cache, or None if there is none or it was built for other inputs."""
        from safetensors import safe_open

        if not path.exists():
            return None
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("fingerprint") != fingerprint:
                return None
            states = [f.get_tensor(str(i)) for i in range(len(list(f.keys())))]
        return cls(int(meta["start"]), states)


def _ids_and_mask(examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[row, : len(e.input_ids)] = 1
    return ids, mask


def fingerprint(model_path: str | Path, start: int, dtype: str,
                examples: Sequence[Example]) -> str:  # fmt: skip
    """What the cached states depend on: the base file, the boundary, the dtype, the inputs."""
    path = Path(model_path)
    digest = hashlib.sha256(json.dumps([path.name, path.stat().st_size, start, dtype]).encode())
    for e in examples:
        digest.update(json.dumps(e.input_ids).encode() + b"\n")
    return digest.hexdigest()
