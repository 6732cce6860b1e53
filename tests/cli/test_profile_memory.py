"""`edge-agent profile`: the estimated resident memory by part, and --measure to check it."""

import json

import pytest

from tests.cli_support import run_cli

PARTS = ("weights", "kv_cache", "compute_buffers", "runtime")


def test_profile_json_breaks_the_estimate_down_and_it_adds_up(capsys) -> None:
    code, out, _ = run_cli(capsys, "profile", "--json", "--profile", "generic-x86-64")
    assert code == 0
    data = json.loads(out)
    memory = data["memory_mb"]
    assert set(memory) == {*PARTS, "total"}
    assert sum(memory[p] for p in PARTS) == pytest.approx(memory["total"], abs=0.3)
    assert memory["total"] == pytest.approx(data["estimated_ram_mb"], abs=0.6)
    assert data["context_size"] < 4096  # sized to the home skill, as `run` gets it
    assert "measured_mb" not in data  # nothing loads without --measure


def test_profile_text_shows_each_part(capsys) -> None:
    code, out, _ = run_cli(capsys, "profile", "--profile", "generic-x86-64")
    assert code == 0
    text = " ".join(out.split())
    for label in ("weights (mmapped file)", "KV cache", "compute buffers", "Python runtime"):
        assert label in text
    assert "sized to skill home" in text


@pytest.mark.integration
def test_profile_measure_loads_the_model_and_reports_its_resident_memory(capsys) -> None:
    args = ("profile", "--json", "--measure", "--profile", "generic-x86-64", "--threads", "1")
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    measured = json.loads(out)["measured_mb"]
    # the model's pages are resident once loaded: at least its KV cache more than before
    grown = measured["after_first_token"] - measured["before_load"]
    assert grown > json.loads(out)["memory_mb"]["kv_cache"]
    assert measured["peak"] >= measured["after_first_token"]
