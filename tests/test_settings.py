import os
import subprocess
import sys
from pathlib import Path

import platformdirs
import pytest

from edge_agent.errors import ConfigError
from edge_agent.settings import config_file_path, load_settings


def write_config(home: Path, text: str) -> None:
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text(text)


def test_home_puts_everything_under_one_folder(edge_home):
    s = load_settings()
    assert s.config_dir == edge_home / "config"
    assert s.data_dir == edge_home / "data"
    assert s.models_dir == edge_home / "data" / "models"
    assert config_file_path() == edge_home / "config" / "config.toml"


def test_defaults_without_any_source():
    s = load_settings()
    assert s.profile == "auto"
    assert s.model is None


def test_precedence_toml_then_env_then_flags(edge_home, monkeypatch):
    write_config(edge_home, 'profile = "raspberry-pi-4"\nmodel = "from-toml"\nthreads = 2\n')
    s = load_settings()
    assert (s.profile, s.model, s.threads) == ("raspberry-pi-4", "from-toml", 2)

    monkeypatch.setenv("EDGE_AGENT_MODEL", "from-env")
    monkeypatch.setenv("EDGE_AGENT_THREADS", "3")
    s = load_settings()
    assert (s.profile, s.model, s.threads) == ("raspberry-pi-4", "from-env", 3)

    s = load_settings(model="from-flag", threads=None)  # None = flag not given
    assert (s.model, s.threads) == ("from-flag", 3)


def test_invalid_value_is_a_config_error_naming_the_field(edge_home):
    write_config(edge_home, "threads = 0\n")
    with pytest.raises(ConfigError, match="threads"):
        load_settings()


def test_unknown_key_is_rejected(edge_home):
    write_config(edge_home, "modle = 'typo'\n")
    with pytest.raises(ConfigError, match="modle"):
        load_settings()


def test_malformed_toml_is_a_config_error(edge_home):
    write_config(edge_home, "profile = [unclosed\n")
    with pytest.raises(ConfigError, match="config.toml"):
        load_settings()


def test_offline_follows_hf_hub_offline(edge_home, monkeypatch):
    assert not load_settings().is_offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_settings().is_offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not load_settings().is_offline


def test_an_explicit_config_file_wins_over_the_home(edge_home, tmp_path, monkeypatch):
    write_config(edge_home, 'profile = "from-home"\n')
    elsewhere = tmp_path / "other.toml"
    elsewhere.write_text('profile = "from-elsewhere"\n')
    monkeypatch.setenv("EDGE_AGENT_CONFIG_FILE", str(elsewhere))
    assert config_file_path() == elsewhere
    assert load_settings().profile == "from-elsewhere"


def test_without_a_home_the_platform_dirs_apply(edge_home, monkeypatch):
    monkeypatch.delenv("EDGE_AGENT_HOME")
    s = load_settings()
    assert s.config_dir == Path(platformdirs.user_config_dir("edge-agent"))
    assert s.data_dir == Path(platformdirs.user_data_dir("edge-agent"))
    assert config_file_path() == s.config_dir / "config.toml"
    if sys.platform.startswith("linux"):  # XDG dirs: conftest points them into the test's home
        assert s.config_dir == edge_home / "xdg-config" / "edge-agent"
        assert s.data_dir == edge_home / "xdg-data" / "edge-agent"


def test_the_suite_never_sees_the_developers_setup(edge_home):
    """conftest's isolation: one fresh home, no other EDGE_AGENT_* variable (but random
    teacher audits off), no offline or proxy variable, no OS keyring (in this process and in
    subprocesses)."""
    import keyring

    from edge_agent.logstore import keyring_available

    assert os.environ["EDGE_AGENT_HOME"] == str(edge_home)
    ours = sorted(k for k in os.environ if k.startswith("EDGE_AGENT_"))
    assert ours == ["EDGE_AGENT_HOME", "EDGE_AGENT_ROUTE_AUDIT_SHARE"]
    assert os.environ["EDGE_AGENT_ROUTE_AUDIT_SHARE"] == "0"
    assert not {"HF_HUB_OFFLINE", "HTTPS_PROXY", "HTTP_PROXY"} & {k.upper() for k in os.environ}
    assert not keyring_available() and keyring.get_keyring().priority == 0
    code = "import keyring; print(keyring.get_keyring().priority)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
