"""The per-device anonymization secret: 32 random bytes in a 0600 file under the config dir."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

from edge_agent.errors import ConfigError
from edge_agent.settings import create_private_file

SECRET_FILE = "anonymize.key"


def device_secret(config_dir: str | Path) -> bytes:
    """This device's secret, created on first use. Never log or sync it: whoever holds it can
    test guesses against the tags."""
    path = Path(config_dir) / SECRET_FILE
    if not path.exists():
        create_private_file(path, secrets.token_bytes(32))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    data = path.read_bytes()
    if len(data) < 32:
        raise ConfigError(f"{path} is truncated; delete it to make a new one (tags will change)")
    return data
