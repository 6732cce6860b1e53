"""A promoted flywheel turn becomes the skill's next signed release, canary set included."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import FlywheelError
from edge_agent.host.curate import Curated, Record
from edge_agent.host.pipeline import TurnResult, canary_set, publish_turn
from edge_agent.host.publish import AdapterRepository
from edge_agent.lora.gguf import export_lora_gguf
from edge_agent.models.gguf import identity_of, read_header
from edge_agent.types import ToolCall
from tests.tinymodel import TinyLora, TinyModel


def _record(i: int, part: str) -> Record:
    call = ToolCall(name="HassTurnOn", arguments={"name": f"lamp {i}"})
    return Record(id=f"{part}{i:02d}", request=f"turn on lamp {i}", context="area: hall", call=call)


def _curated() -> Curated:
    return Curated(
        train=[_record(i, "t") for i in range(5)],
        validation=[_record(i, "v") for i in range(12)],
        eval=[_record(i, "e") for i in range(3)],
    )


def _turn(tmp_path: Path, tiny_model: TinyModel, tiny_lora: TinyLora, promoted: bool) -> TurnResult:
    identity = identity_of(read_header(tiny_model.gguf_path))
    path = export_lora_gguf(tiny_lora.state, alpha=tiny_lora.alpha, identity=identity,
                            path=tmp_path / "home.gguf")  # fmt: skip
    summary = {"candidate": {"exact": 0.9}, "incumbent": {"exact": 0.1}, "reason": "better"}
    return TurnResult(tmp_path, path, promoted, summary)


def test_canary_comes_from_validation_never_from_eval() -> None:
    canary = canary_set(_curated(), size=8)
    assert len(canary) == 8
    assert {c.text for c in canary} <= {r.request for r in _curated().validation}
    assert canary[0].context == "area: hall" and canary[0].name == "HassTurnOn"


def test_promoted_turn_is_published_as_next_version(
    tmp_path: Path, tiny_model: TinyModel, tiny_lora: TinyLora
) -> None:
    repo = AdapterRepository.init(tmp_path / "tuf")
    turn = _turn(tmp_path, tiny_model, tiny_lora, promoted=True)
    first = publish_turn(turn, _curated(), tiny_model.gguf_path, repo, profiles=["laptop"])
    second = publish_turn(turn, _curated(), tiny_model.gguf_path, repo)
    assert (first.name, second.name) == ("home-v1", "home-v2")
    (listed, _) = repo.releases()
    assert listed.base_identity == identity_of(read_header(tiny_model.gguf_path)).as_dict()
    assert listed.target_profiles == ["laptop"] and len(listed.canary) == 8
    assert listed.gate["candidate"] == {"exact": 0.9}


def test_a_rejected_turn_is_never_published(
    tmp_path: Path, tiny_model: TinyModel, tiny_lora: TinyLora
) -> None:
    repo = AdapterRepository.init(tmp_path / "tuf")
    turn = _turn(tmp_path, tiny_model, tiny_lora, promoted=False)
    with pytest.raises(FlywheelError, match="did not promote"):
        publish_turn(turn, _curated(), tiny_model.gguf_path, repo)
    assert repo.releases() == []
