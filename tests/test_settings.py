from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.settings import config_file_path, load_settings


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_AGENT_HOME", str(tmp_path))
    for var in ("EDGE_AGENT_PROFILE", "EDGE_AGENT_MODEL", "EDGE_AGENT_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def write_config(home: Path, text: str) -> None:
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text(text)


def test_home_puts_everything_under_one_folder(home):
    s = load_settings()
    assert s.config_dir == home / "config"
    assert s.data_dir == home / "data"
    assert s.models_dir == home / "data" / "models"
    assert config_file_path() == home / "config" / "config.toml"


def test_defaults_without_any_source(home):
    s = load_settings()
    assert s.profile == "auto"
    assert s.model is None


def test_precedence_toml_then_env_then_flags(home, monkeypatch):
    write_config(home, 'profile = "raspberry-pi-4"\nmodel = "from-toml"\nthreads = 2\n')
    s = load_settings()
    assert (s.profile, s.model, s.threads) == ("raspberry-pi-4", "from-toml", 2)

    monkeypatch.setenv("EDGE_AGENT_MODEL", "from-env")
    monkeypatch.setenv("EDGE_AGENT_THREADS", "3")
    s = load_settings()
    assert (s.profile, s.model, s.threads) == ("raspberry-pi-4", "from-env", 3)

    s = load_settings(model="from-flag", threads=None)  # None = flag not given
    assert (s.model, s.threads) == ("from-flag", 3)


def test_invalid_value_is_a_config_error_naming_the_field(home):
    write_config(home, "threads = 0\n")
    with pytest.raises(ConfigError, match="threads"):
        load_settings()


def test_unknown_key_is_rejected(home):
    write_config(home, "modle = 'typo'\n")
    with pytest.raises(ConfigError, match="modle"):
        load_settings()


def test_malformed_toml_is_a_config_error(home):
    write_config(home, "profile = [unclosed\n")
    with pytest.raises(ConfigError, match="config.toml"):
        load_settings()


def test_offline_follows_hf_hub_offline(home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_settings().is_offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not load_settings().is_offline
