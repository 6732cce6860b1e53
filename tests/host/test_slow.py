"""The real thing, briefly: SmolLM2-135M from its GGUF, a few LoRA steps, gated in llama.cpp."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.host.curate import curate_split
from edge_agent.host.finetune import TrainConfig
from edge_agent.host.pipeline import run_turn
from edge_agent.models.catalog import load_catalog
from edge_agent.models.store import ModelStore
from edge_agent.skills.home.dataset import load_split

pytestmark = pytest.mark.slow


def test_a_short_real_turn_runs_end_to_end(tmp_path: Path) -> None:
    model = ModelStore(tmp_path / "models").ensure(load_catalog().default())
    parts = {
        "train": load_split("train")[:16],
        "validation": load_split("validation")[:4],
        "test": load_split("test")[:8],
    }
    config = TrainConfig(first_layer=24, batch_size=4, max_steps=4, learning_rate=2e-3)
    result = run_turn(curate_split(parts), model, tmp_path, config=config, progress=False)
    summary = result.summary
    assert summary["train"]["steps"] == 4 and summary["train"]["tokens_per_s"] > 0
    assert summary["candidate"]["n"] == summary["incumbent"]["n"] == 8
    assert result.adapter.stat().st_size > 0
