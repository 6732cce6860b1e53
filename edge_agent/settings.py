"""One typed settings model, read once at the edge of the program.

Precedence, lowest to highest: built-in defaults < ``config.toml`` in the config dir <
``EDGE_AGENT_*`` environment variables < CLI flags. ``EDGE_AGENT_HOME`` puts config, data
and cache under one folder (tests and containers use it); otherwise the XDG / platform
dirs from platformdirs apply.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from edge_agent.errors import ConfigError

APP_NAME = "edge-agent"
CONFIG_FILE_NAME = "config.toml"


def _dirs() -> tuple[Path, Path, Path]:
    """Config, data and cache dirs for this process."""
    home = os.environ.get("EDGE_AGENT_HOME")
    if home:
        root = Path(home).expanduser()
        return root / "config", root / "data", root / "cache"
    return (
        Path(platformdirs.user_config_dir(APP_NAME)),
        Path(platformdirs.user_data_dir(APP_NAME)),
        Path(platformdirs.user_cache_dir(APP_NAME)),
    )


# teacher-first: the remote model answers every turn and the SLM's attempt is logged beside it
# (day 0 of a skill); local-first: the SLM answers what it is confident about, the rest
# escalates; local-only: nothing leaves the device.
RouteMode = Literal["teacher-first", "local-first", "local-only"]


class SkillConfig(BaseModel):
    """One ``[skills.NAME]`` table: a skill the device runs, or settings of a built-in one.

    Where its tools come from, at most one of: ``python`` ("module:attribute", a `Skill`, a
    `Toolset`, or a callable taking the settings and returning either), ``mcp_command`` (an
    MCP server started over stdio) or ``mcp_url`` (a streamable-HTTP MCP server). None of
    them: the settings apply to a built-in or entry-point skill of that name."""

    model_config = ConfigDict(extra="forbid")

    python: str | None = Field(None, pattern=r"^[\w.]+:[\w.]+$")
    mcp_command: list[str] | None = Field(None, min_length=1)
    mcp_url: str | None = Field(None, pattern=r"^https?://")
    mcp_env: dict[str, str] = Field(default_factory=dict, description="for mcp_command")
    mcp_headers: dict[str, str] = Field(default_factory=dict, description="for mcp_url")
    mcp_timeout_s: float = Field(30.0, gt=0, description="per MCP request")
    description: str = ""
    route: RouteMode | None = Field(None, description="default: the skill's own")
    teacher_labels_offline: bool | None = Field(
        None, description="ask the teacher later for turns served locally while it was down"
    )
    route_audit_share: float | None = Field(
        None, ge=0, le=1, description="overrides route_audit_share for this skill"
    )

    @model_validator(mode="after")
    def _one_source(self) -> SkillConfig:
        given = [k for k in ("python", "mcp_command", "mcp_url") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"a skill's tools come from one place, not {' and '.join(given)}")
        return self


def config_file_path() -> Path:
    explicit = os.environ.get("EDGE_AGENT_CONFIG_FILE")
    return Path(explicit).expanduser() if explicit else _dirs()[0] / CONFIG_FILE_NAME


class Settings(BaseSettings):
    """Everything a user can configure. Field names are the TOML keys and, upper-cased with
    the ``EDGE_AGENT_`` prefix, the environment variables."""

    model_config = SettingsConfigDict(env_prefix="EDGE_AGENT_", extra="forbid")

    profile: str = Field("auto", description="device profile name, or 'auto' to detect")
    model: str | None = Field(None, description="catalog name or GGUF path; None = fit plan")
    context_size: int | None = Field(None, ge=256, description="overrides the profile's")
    threads: int | None = Field(None, ge=1, description="overrides the profile's")
    offline: bool = Field(False, description="never touch the network (also HF_HUB_OFFLINE)")
    profiles_dir: Path | None = Field(None, description="extra folder of device profile TOMLs")
    tools: str = Field("home", description="skill for `run`/`chat`; 'none' = plain chat")
    skills: dict[str, SkillConfig] = Field(
        default_factory=dict,
        description="skills this device runs besides `tools`, and settings of built-in ones",
    )
    area: str | None = Field(None, description="the area this device stands in (the speaker's)")
    home_backend: Literal["simulated", "home_assistant"] = Field(
        "simulated", description="the home the `home` skill acts on: simulated, or a real HA"
    )
    home_url: str | None = Field(
        None, description="Home Assistant's base URL (http://homeassistant.local:8123)"
    )
    home_token_env: str = Field(
        "HASS_TOKEN", description="env variable holding HA's long-lived token (else keyring)"
    )
    home_inventory: Path | None = Field(
        None, description="inventory file of the simulated home; default HA's test home"
    )
    policy_file: Path | None = Field(None, description="permission policy TOML")
    draft_tokens: int | None = Field(
        None,
        ge=0,
        le=16,
        description="prompt-lookup draft tokens per decode step (0 = off); default: profile's",
    )
    turn_deadline_s: float | None = Field(
        20.0,
        gt=0,
        description="seconds one agent turn may take, generations and tool calls together; "
        "past it no further call starts and the turn ends with TurnTimeoutError",
    )
    adapters: bool = Field(True, description="use the adapter trained for a toolset, if any")
    adapters_auto_update: bool = Field(
        False, description="each sync round: pull, canary-check and activate new adapters"
    )
    adapters_canary_min: float = Field(
        0.5, ge=0, le=1, description="exact match a new adapter must reach on its canary set"
    )
    adapters_canary_tolerance: float = Field(
        0.02, ge=0, le=1, description="how far a new adapter may fall below the current one"
    )
    config_dir: Path = Field(default_factory=lambda: _dirs()[0])
    data_dir: Path = Field(default_factory=lambda: _dirs()[1])
    cache_dir: Path = Field(default_factory=lambda: _dirs()[2])
    log_enabled: bool = Field(True, description="record every agent turn in the sealed log")
    log_budget_mb: float = Field(256.0, gt=0, description="disk budget of the interaction log")
    log_period_days: int = Field(7, ge=1, description="days of records sealed under one data key")
    log_retention_days: int | None = Field(
        90, ge=1, description="crypto-shred periods older than this; None = keep (budget only)"
    )
    log_key_source: Literal["auto", "keyring", "passphrase", "file"] = Field(
        "auto", description="master key: OS keyring if any, else a 0600 key file ('auto')"
    )
    log_passphrase: SecretStr | None = Field(
        None, description="for log_key_source='passphrase' (EDGE_AGENT_LOG_PASSPHRASE)"
    )
    sync_enabled: bool = Field(False, description="push anonymized turns to the enrolled host")
    sync_host_url: str | None = Field(
        None, description="overrides the enrolled host URL (the pinned certificate still applies)"
    )
    sync_interval_s: float = Field(300.0, gt=0, description="how often a running agent syncs")
    sync_batch_records: int = Field(200, ge=1, le=1000, description="records per batch at most")
    sync_batch_kb: int = Field(256, ge=1, description="compressed batch size at most, in KiB")
    sync_queue_batches: int = Field(
        4, ge=1, description="anonymized batches held in memory at most (the log holds the rest)"
    )
    sync_max_kbps: float | None = Field(
        None, gt=0, description="average upload rate limit in KiB/s; None = unlimited"
    )
    sync_timeout_s: float = Field(30.0, gt=0, description="per request, connect and read")
    remote_url: str | None = Field(
        None, description="OpenAI-compatible base URL of the large model to escalate to (…/v1)"
    )
    remote_model: str | None = Field(None, description="the model name the endpoint serves")
    remote_api_key_env: str | None = Field(
        None, description="name of the environment variable holding its API key (else keyring)"
    )
    remote_timeout_s: float = Field(20.0, gt=0, description="per remote request")
    remote_retries: int = Field(1, ge=0, le=5, description="retries on connection errors, 5xx")
    remote_cooldown_s: float = Field(
        60.0, gt=0, description="skip the remote this long after a failure (circuit breaker)"
    )
    remote_anonymize: bool = Field(True, description="anonymize what is sent to the remote")
    remote_label_batch: int = Field(
        20, ge=0, description="late teacher labels asked per sync round; 0: none"
    )
    remote_label_max_age_days: float = Field(
        7.0, gt=0, description="turns served while the remote was down are labelled this long"
    )
    route_file: Path | None = Field(
        None, description="calibrated router thresholds; default <data dir>/route.json"
    )
    route_tools: dict[str, Literal["always_remote", "never_remote"]] = Field(
        default_factory=dict, description="per-tool routing rules"
    )
    route_audit_share: float = Field(
        0.02, ge=0, le=1, description="share of confident local turns the teacher labels too"
    )
    embedder_dir: Path | None = Field(
        None, description="embedders, one folder per name; default <data dir>/adapters/embedders"
    )
    server_token: bool = Field(
        True,
        description="`serve` without an API key requires this install's token (a 0600 file in "
        "the config dir), even on loopback; false: any local process or page may call it",
    )
    server_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names `serve` answers to besides localhost, 127.0.0.1 and [::1] "
        "(e.g. 'edge.local'); '*' = any. Others are refused: DNS rebinding",
    )
    server_allowed_origins: list[str] = Field(
        default_factory=list,
        description="web page origins that may call `serve` (CORS), e.g. "
        "'http://localhost:3000'; none by default: browsers' cross-site requests are refused",
    )
    server_max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="largest request body `serve` reads (else 413)"
    )

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def adapters_dir(self) -> Path:
        """Installed adapters, their state and the TUF client's metadata."""
        return self.data_dir / "adapters"

    @property
    def embedders_dir(self) -> Path:
        """Sentence embedders by name (the router's distance signal): what adapter updates
        fetch, and where the runtime looks for the one an adapter's centroids came from."""
        return self.embedder_dir or self.adapters_dir / "embedders"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "log" / "interactions.db"

    @property
    def route_path(self) -> Path:
        return self.route_file or self.data_dir / "route.json"

    @property
    def log_key_dir(self) -> Path:
        """Kept apart from the data dir so a copy of the log alone does not carry its key."""
        return self.config_dir / "keys"

    @property
    def enrollment_path(self) -> Path:
        """The sync credential and the pinned host certificate (0600)."""
        return self.config_dir / "sync" / "enrollment.json"

    @property
    def server_token_path(self) -> Path:
        """This install's token for `edge-agent serve` (0600), made on first use."""
        return self.config_dir / "server-token"

    @property
    def is_offline(self) -> bool:
        return self.offline or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First source wins: CLI flags arrive as init kwargs.
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file_path())
        return init_settings, env_settings, toml


def load_settings(**cli_flags: Any) -> Settings:
    """Settings from all sources; ``cli_flags`` set to None are treated as not given."""
    given = {k: v for k, v in cli_flags.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(
            f"invalid setting {where!r}: {first['msg']} "
            f"(check {config_file_path()}, EDGE_AGENT_* variables and flags)"
        ) from exc
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"cannot read {config_file_path()}: {exc}") from exc


def create_private_file(path: Path, data: bytes) -> bool:
    """Write `data` to `path` as a new 0600 file (its folder made if missing); False when the
    file exists already — another process made it first, and the caller uses theirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True
