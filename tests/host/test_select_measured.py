"""Step 4 with measured bases: per device class, the most accurate base that is fast enough
there, from each base's own adapter on the skill's test split."""

from __future__ import annotations

import json
from pathlib import Path

from edge_agent.host.select import (
    Target,
    choose_for,
    load_measured,
    record_measurement,
    select_models,
)
from edge_agent.models.catalog import load_catalog
from edge_agent.models.profile import load_profile

SMOL, GEMMA = "smollm2-135m-instruct-q4_1", "gemma3-270m-q4_k_m"
PI4, LAPTOP = (
    Target(load_profile("raspberry-pi-4"), 2048),
    Target(load_profile("generic-x86-64"), 16384),
)


def _file(tmp_path: Path, gemma_exact: float, gemma_ms: float = 900.0) -> Path:
    path = tmp_path / "base_models.json"
    path.write_text(json.dumps({
        "slowdown": {"raspberry-pi-4": 3.0, "generic-x86-64": 1.0},
        "skills": {"home": {
            SMOL: {"exact": 0.80, "right_tool": 0.96, "p50_ms": 400.0},
            GEMMA: {"exact": gemma_exact, "right_tool": 0.97, "p50_ms": gemma_ms},
        }},
    }))  # fmt: skip
    return path


def test_a_slow_board_keeps_the_fast_base_and_a_laptop_takes_the_more_accurate(
    tmp_path: Path,
) -> None:
    measured = load_measured("home", _file(tmp_path, gemma_exact=0.85))
    selection = select_models("home", [PI4, LAPTOP], load_catalog(), 512, measured)
    # Pi 4: Gemma at ~2700 ms is over the budget, SmolLM2 at ~1200 ms is within it
    assert selection.bases == {SMOL: ["raspberry-pi-4"], GEMMA: ["generic-x86-64"]}
    assert "85.0% exact" in selection.reasons[1] and "budget" in selection.reasons[1]


def test_a_base_that_is_not_more_accurate_loses_to_the_faster_one(tmp_path: Path) -> None:
    measured = load_measured("home", _file(tmp_path, gemma_exact=0.805))  # within a point
    assert choose_for(LAPTOP, load_catalog(), 512, measured).name == SMOL


def test_when_none_is_fast_enough_the_fastest_measured_base_is_chosen(tmp_path: Path) -> None:
    measured = load_measured("home", _file(tmp_path, gemma_exact=0.9, gemma_ms=5000.0))
    assert choose_for(PI4, load_catalog(), 512, measured).name == SMOL


def test_a_skill_without_measurements_keeps_the_largest_fitting_model(tmp_path: Path) -> None:
    measured = load_measured("calendar", _file(tmp_path, gemma_exact=0.9))
    assert measured == {}
    assert choose_for(LAPTOP, load_catalog(), 512, measured).parameters > 1_000_000_000
    assert load_measured("home", tmp_path / "absent.json") == {}


def test_a_bench_line_is_recorded_for_the_selection_to_read(tmp_path: Path) -> None:
    path = _file(tmp_path, gemma_exact=0.5)
    record_measurement({"model": GEMMA, "exact": 0.87, "right_tool": 0.97, "p50_ms": 700.0,
                        "wall_s": 12.0}, path)  # fmt: skip
    measured = load_measured("home", path)
    assert measured[GEMMA].exact == 0.87 and measured[SMOL].exact == 0.80
    assert "wall_s" not in json.loads(path.read_text())["skills"]["home"][GEMMA]


def test_the_packaged_measurements_name_catalog_models_and_shipped_profiles() -> None:
    measured = load_measured("home")
    catalog = load_catalog()
    assert SMOL in measured and all(name in catalog for name in measured)
    for profile in next(iter(measured.values())).slowdown:
        assert load_profile(profile).name == profile


def test_a_board_too_small_for_the_other_base_says_so(tmp_path: Path) -> None:
    measured = load_measured("home", _file(tmp_path, gemma_exact=0.95, gemma_ms=100.0))
    small = Target(load_profile("raspberry-pi-4"), 1024)  # Gemma needs ~850 MB, 358 MB here
    selection = select_models("home", [small], load_catalog(), 512, measured)
    assert selection.bases == {SMOL: ["raspberry-pi-4"]}
    assert f"{GEMMA} 95.0% at ~300 ms (does not fit)" in selection.reasons[0]
