"""The per-device anonymization secret: 32 random bytes in a 0600 file under the config dir."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from edge_agent.errors import ConfigError

SECRET_FILE = "anonymize.key"


def device_secret(config_dir: str | Path) -> bytes:
    """This device's secret, created on first use. Never log or sync it: whoever holds it can
    test guesses against the tags."""
    path = Path(config_dir) / SECRET_FILE
    if not path.exists():
        _create(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    data = path.read_bytes()
    if len(data) < 32:
        raise ConfigError(f"{path} is truncated; delete it to make a new one (tags will change)")
    return data


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first; use theirs
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
