"""A quantized KV cache (q8_0) loads and generates with flash attention, and a profile asking
for it without flash attention is refused before anything loads."""

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from edge_agent.backends.base import GenerationRequest
from edge_agent.errors import ConfigError
from edge_agent.models.catalog import load_catalog
from edge_agent.runtime import open_runtime
from edge_agent.settings import load_settings
from edge_agent.types import Message
from quantize.gguf_writer import tiny_bpe_tokenizer, write_llama_gguf
from tests.tinymodel import _random_state, tiny_config

PROFILE = (Path(__file__).parents[2] / "device_profiles" / "generic-x86-64.toml").read_text()


def profile_dir(tmp_path: Path, kv: str, flash: bool) -> Path:
    text = re.sub(r'kv_cache_type = "\w+"', f'kv_cache_type = "{kv}"', PROFILE)
    text = re.sub(r"flash_attention = \w+", f"flash_attention = {str(flash).lower()}", text)
    text = text.replace('name = "generic-x86-64"', 'name = "kv-test"')
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    (folder / "kv-test.toml").write_text(text)
    return folder


@pytest.fixture(scope="module")
def head32_model(tmp_path_factory) -> Path:
    """A tiny llama whose heads are 32 wide: a q8_0 cache row is whole 32-value blocks (the
    shared tiny model's 16-wide heads are not, and llama.cpp refuses them)."""
    tokenizer = tiny_bpe_tokenizer()
    config = tiny_config(tokenizer.n_vocab) | {"num_attention_heads": 2, "num_key_value_heads": 1}
    state = _random_state(config, np.random.default_rng(0))
    folder = tmp_path_factory.mktemp("head32")
    return write_llama_gguf(folder / "tiny-head32.gguf", config, state, tokenizer)


def test_q8_0_with_flash_attention_loads_and_generates(tmp_path, head32_model) -> None:
    folder = profile_dir(tmp_path, "q8_0", True)
    settings = load_settings(
        model=str(head32_model), profile="kv-test", profiles_dir=folder, threads=1,
        tools="none", log_enabled=False,
    )  # fmt: skip
    with open_runtime(settings) as rt:
        options = rt.plan.backend_options()
        assert options["kv_cache_type"] == "q8_0" and options["flash_attn"] is True
        hi = GenerationRequest(messages=[Message(role="user", content="hi")], max_tokens=4)
        assert list(rt.backend.generate(hi))  # it decodes through the quantized cache


def test_q8_0_without_flash_attention_is_refused_naming_the_fix(tmp_path) -> None:
    settings = load_settings(profile="kv-test", profiles_dir=profile_dir(tmp_path, "q8_0", False))
    with pytest.raises(ConfigError, match=r"kv_cache_type.*needs flash_attention = true"):
        open_runtime(settings)


def test_a_q8_0_cache_is_estimated_at_about_half_of_f16() -> None:
    entry = load_catalog().default()
    ratio = entry.kv_cache_mb(2048, "q8_0") / entry.kv_cache_mb(2048, "f16")
    assert ratio == pytest.approx(34 / 64)


def test_a_model_whose_cache_cannot_be_q8_0_starts_with_f16(tmp_path, tiny_model, caplog) -> None:
    """The shared tiny model's 16-wide heads cannot hold q8_0 blocks: the device still starts."""
    caplog.set_level(logging.INFO, logger="edge_agent.backends.llama_cpp")
    folder = profile_dir(tmp_path, "q8_0", True)
    settings = load_settings(
        model=str(tiny_model.gguf_path), profile="kv-test", profiles_dir=folder, threads=1,
        tools="none", log_enabled=False,
    )  # fmt: skip
    with open_runtime(settings) as rt:
        hi = GenerationRequest(messages=[Message(role="user", content="hi")], max_tokens=4)
        assert list(rt.backend.generate(hi))
    assert "no q8_0 KV cache for this model; using f16" in caplog.text
