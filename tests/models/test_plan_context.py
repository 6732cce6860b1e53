"""The fit plan sizes the context to what the device's skills need, unless the user set one."""

import pytest

from edge_agent.models.catalog import load_catalog
from edge_agent.models.plan import SKILL_CONTEXT_FLOOR, ContextNeed, make_plan
from edge_agent.models.store import ModelStore
from edge_agent.settings import load_settings
from tests.models.test_plan import EverythingLocal, device


def plan(need=None, **overrides):
    s = load_settings(**overrides)
    store = EverythingLocal(s.models_dir)
    return make_plan(s, load_catalog(), store, device("raspberry-pi-5", 8192), need=need)


def test_a_skills_need_is_rounded_up_to_a_step_above_a_floor() -> None:
    assert ContextNeed(300, "skill x").context_size == SKILL_CONTEXT_FLOOR
    assert ContextNeed(1025, "skill x").context_size == 1280
    assert ContextNeed(2149, "skill x").context_size == 2304


def test_the_plan_sizes_the_context_to_the_skills_longest_turn() -> None:
    p = plan(lambda entry: ContextNeed(2149, "skill home"))
    assert p.profile.context_size == 4096
    assert p.context_size == 2304
    why = next(r for r in p.reasons if r.startswith("context"))
    assert "sized to skill home (longest turn ~2149 tokens" in why
    assert "context_size" in why  # how to override it


def test_a_smaller_need_saves_kv_cache_memory() -> None:
    sized, full = plan(lambda entry: ContextNeed(900, "skill home")), plan()
    assert sized.context_size == 1024 and full.context_size == 4096
    assert sized.memory_mb()["kv_cache"] * 4 == pytest.approx(full.memory_mb()["kv_cache"])
    assert sized.ram_mb < full.ram_mb


def test_an_explicit_context_size_wins_over_the_skills_need() -> None:
    asked: list[str] = []

    def need(entry):
        asked.append(entry.name)
        return ContextNeed(500, "skill home")

    p = plan(need, context_size=3072)
    assert p.context_size == 3072 and not asked
    assert "context 3072 from --context-size" in p.reasons


def test_an_unknown_need_or_one_above_the_profile_keeps_the_profiles_context() -> None:
    assert plan(lambda entry: None).context_size == 4096
    p = plan(lambda entry: ContextNeed(9000, "skill home"))
    assert p.context_size == 4096
    assert "context 4096 from profile raspberry-pi-5" in p.reasons


def test_the_need_is_asked_per_model() -> None:
    p = plan(lambda e: ContextNeed(700, "skill home") if "smollm2-135m" in e.name else None)
    by_name = {c.entry.name: c.context_size for c in p.candidates}
    assert by_name["smollm2-135m-instruct-q4_1"] == 1024
    assert by_name["qwen2.5-0.5b-instruct-q4_0"] == 4096


def test_the_memory_breakdown_adds_up_to_the_estimate() -> None:
    p = plan(lambda entry: ContextNeed(700, "skill home"))
    parts = p.memory_mb()
    assert set(parts) == {"weights", "kv_cache", "compute_buffers", "runtime", "total"}
    assert parts["weights"] == p.entry.file_size_mb
    assert sum(v for k, v in parts.items() if k != "total") == pytest.approx(parts["total"])
    assert parts["total"] == pytest.approx(p.ram_mb)
    assert p.to_dict()["memory_mb"]["total"] == pytest.approx(p.ram_mb, abs=0.1)


def test_plans_without_a_need_are_unchanged(tmp_path) -> None:
    s = load_settings()
    p = make_plan(s, load_catalog(), ModelStore(tmp_path), device("raspberry-pi-4", 4096))
    assert p.context_size == p.profile.context_size
