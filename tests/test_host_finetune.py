"""Fine-tuning on the tiny GGUF: a few steps, resume, export, load in llama.cpp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.adapters.export import load_peft_adapter
from edge_agent.backends.base import GenerationRequest, Message
from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.host.curate import Record
from edge_agent.host.examples import Example, Tokenizer, build_examples
from edge_agent.host.finetune import CHECKPOINT, TrainConfig, finetune, lr_at, make_batches
from edge_agent.host.pipeline import export_adapter
from edge_agent.toolsets.home import home_toolset
from edge_agent.types import ToolCall
from tests.tinymodel import TinyModel

CONFIG = TrainConfig(rank=2, alpha=4, batch_size=2, epochs=1, warmup_steps=1, threads=1,
                     checkpoint_every=1, learning_rate=1e-2)  # fmt: skip


@pytest.fixture(scope="module")
def examples(tiny_model: TinyModel) -> list[Example]:
    records = [
        Record(id=f"r{i}", request=f"turn on light {i}", context="Speaker area: Office",
               call=ToolCall(name="HassTurnOn", arguments={"name": f"light {i}"}))
        for i in range(8)
    ]  # fmt: skip
    tokenizer = Tokenizer(tiny_model.gguf_path)
    try:
        return build_examples(records, home_toolset(), tokenizer)
    finally:
        tokenizer.close()


def weights(directory: Path) -> dict[str, np.ndarray]:
    return load_peft_adapter(directory)[0]


def test_batches_are_deterministic_and_cover_every_example(examples: list[Example]) -> None:
    batches = make_batches(examples, 3, seed=5)
    assert batches == make_batches(examples, 3, seed=5)
    assert sorted(i for b in batches for i in b) == list(range(len(examples)))


def test_resumed_run_ends_where_an_uninterrupted_one_does(
    tiny_model: TinyModel, examples: list[Example], tmp_path: Path
) -> None:
    straight = finetune(tiny_model.gguf_path, examples, tmp_path / "a", progress=False,
                        config=TrainConfig(**CONFIG.to_dict() | {"max_steps": 4}))  # fmt: skip
    first = finetune(tiny_model.gguf_path, examples, tmp_path / "b", progress=False,
                     config=TrainConfig(**CONFIG.to_dict() | {"max_steps": 2}))  # fmt: skip
    assert first.steps == 2 and (tmp_path / "b" / CHECKPOINT / "trainer.pt").exists()
    resumed = finetune(tiny_model.gguf_path, examples, tmp_path / "b", progress=False,
                       config=TrainConfig(**CONFIG.to_dict() | {"max_steps": 4}))  # fmt: skip
    assert resumed.steps == straight.steps == 4 and resumed.tokens == straight.tokens
    a, b = weights(straight.adapter_dir), weights(resumed.adapter_dir)
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(np.abs(v).max() > 0 for k, v in a.items() if "lora_B" in k)  # it learned


def test_exported_adapter_loads_and_runs_in_llama_cpp(
    tiny_model: TinyModel, examples: list[Example], tmp_path: Path
) -> None:
    config = TrainConfig(**CONFIG.to_dict() | {"max_steps": 1, "first_layer": 1})
    trained = finetune(tiny_model.gguf_path, examples, tmp_path / "t", config=config,
                       validation=examples[:2], progress=False)  # fmt: skip
    assert len(trained.validation_loss) == 1
    assert all(".layers.1." in k for k in weights(trained.adapter_dir))  # top layer only
    gguf = export_adapter(trained.adapter_dir, tiny_model.gguf_path, tmp_path / "a.gguf")
    with LlamaCppBackend(tiny_model.gguf_path, n_ctx=256, n_threads=1) as backend:
        backend.load_adapter("home", gguf)
        backend.use_adapter("home")
        request = GenerationRequest(messages=[Message(role="user", content="hi")], max_tokens=4)
        assert backend.complete(request).usage.completion_tokens >= 1


def test_schedule_restarts_each_epoch_so_extending_a_run_changes_nothing_before() -> None:
    config = TrainConfig(warmup_steps=2, learning_rate=1.0)
    one = [lr_at(s, 10, 10, config) for s in range(10)]
    two = [lr_at(s, 20, 10, config) for s in range(20)]
    assert two[:10] == one and one[0] == 0.5 and two[10] == 1.0 and two[19] < 0.2
