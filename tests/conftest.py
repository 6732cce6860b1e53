"""Shared pytest fixtures, one section per concern."""

from __future__ import annotations

import pytest

from edge_agent.models.gguf import BaseModelIdentity, identity_of, read_header
from tests.tinymodel import TinyLora, TinyModel, make_tiny_llama, make_tiny_lora

# --- tiny models (tests/tinymodel.py) ---------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A 2-layer random llama written as an F32 GGUF, with its torch twin on demand."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_lora(tiny_model: TinyModel) -> TinyLora:
    """A rank-4 peft LoRA on every projection of `tiny_model`, with non-zero B."""
    return make_tiny_lora(tiny_model)


@pytest.fixture(scope="session")
def identity(tiny_model: TinyModel) -> BaseModelIdentity:
    """The base-model identity of `tiny_model`: what its adapters must match."""
    return identity_of(read_header(tiny_model.gguf_path))
