"""Step 4: the model to fine-tune is the one the target devices' fit plans will run."""

from __future__ import annotations

import pytest

from edge_agent.errors import ModelDoesNotFitError
from edge_agent.host.select import Target, choose_for, context_needed, select_models
from edge_agent.models.catalog import load_catalog
from edge_agent.models.profile import load_profile


def test_context_needed_rounds_the_long_tail_up_to_a_power_of_two() -> None:
    assert context_needed([]) == 512
    assert context_needed([100] * 98 + [700] * 2) == 1024
    assert context_needed([100] * 200 + [5000]) == 512  # one outlier past the 99th percentile


def test_a_small_board_gets_the_small_default_model() -> None:
    entry = choose_for(Target(load_profile("raspberry-pi-4"), 1024), load_catalog(), 512)
    assert entry.name == "smollm2-135m-instruct-q4_1"


def test_more_memory_means_a_larger_base_and_one_adapter_per_base() -> None:
    targets = [Target(load_profile("raspberry-pi-4"), 1024),
               Target(load_profile("raspberry-pi-5"), 8192)]  # fmt: skip
    selection = select_models("home", targets, load_catalog(), 512)
    assert len(selection.bases) == 2
    assert selection.bases["smollm2-135m-instruct-q4_1"] == ["raspberry-pi-4"]
    big = next(name for name in selection.bases if name != "smollm2-135m-instruct-q4_1")
    assert load_catalog().get(big).parameters > 1_000_000_000
    assert all("budget" in reason for reason in selection.reasons)


def test_a_skill_needing_more_context_than_the_profile_gives_is_refused() -> None:
    with pytest.raises(ModelDoesNotFitError, match="context of 8192"):
        choose_for(Target(load_profile("raspberry-pi-4"), 8192), load_catalog(), 8192)


def test_no_model_fits_a_tiny_board() -> None:
    with pytest.raises(ModelDoesNotFitError, match="larger board"):
        choose_for(Target(load_profile("raspberry-pi-4"), 600), load_catalog(), 512)
