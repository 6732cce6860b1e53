"""The runtime sizes the model's context to the device's skills (issue 16)."""

import pytest

from edge_agent.errors import ContextLengthError
from edge_agent.models.catalog import load_catalog
from edge_agent.models.plan import ContextNeed
from edge_agent.runtime import open_runtime, skills_need
from edge_agent.settings import load_settings
from edge_agent.skills.home.context_need import turn_tokens


def test_the_home_skill_needs_its_adapted_bound_on_the_model_its_adapter_is_for() -> None:
    settings = load_settings()
    need = skills_need(settings)
    assert need is not None
    got = need(load_catalog().default())
    assert got == ContextNeed(turn_tokens(settings, adapted=True) or 0, "skill home")


def test_no_need_where_the_skill_would_run_bare_or_for_plain_chat() -> None:
    need = skills_need(load_settings())
    assert need is not None
    assert need(load_catalog().get("qwen2.5-0.5b-instruct-q4_0")) is None  # no adapter for it
    bare = skills_need(load_settings(adapters=False))
    assert bare is not None and bare(load_catalog().default()) is None
    assert skills_need(load_settings(tools="none")) is None


@pytest.mark.integration
def test_a_runtime_loads_the_skill_sized_context_and_refuses_a_request_beyond_it() -> None:
    with open_runtime(threads=1, log_enabled=False, profile="generic-x86-64") as rt:
        assert rt.plan.context_size < rt.plan.profile.context_size
        assert rt.backend.n_ctx == rt.plan.context_size  # type: ignore[attr-defined]
        assert any("sized to skill home" in r for r in rt.plan.reasons)
        agent = rt.agent("home")
        with pytest.raises(ContextLengthError, match="context_size"):
            agent.run("is the " + "very " * 3000 + "big lamp on")  # one request, not split


@pytest.mark.integration
def test_the_server_and_an_explicit_context_size_keep_theirs() -> None:
    settings = load_settings(threads=1, log_enabled=False, profile="generic-x86-64")
    with open_runtime(settings, size_to_skills=False) as rt:
        assert rt.plan.context_size == rt.plan.profile.context_size
    with open_runtime(settings.model_copy(update={"context_size": 1536})) as rt:
        assert rt.backend.n_ctx == 1536  # type: ignore[attr-defined]


@pytest.mark.integration
def test_draft_tokens_come_from_the_profile_unless_set() -> None:
    with open_runtime(threads=1, log_enabled=False, profile="generic-x86-64") as rt:
        assert rt.plan.backend_options()["draft_tokens"] == rt.plan.profile.draft_tokens == 0
        assert rt.backend.draft_tokens == 0  # type: ignore[attr-defined]
    with open_runtime(threads=1, log_enabled=False, draft_tokens=3) as rt:
        assert rt.backend.draft_tokens == 3  # type: ignore[attr-defined]
