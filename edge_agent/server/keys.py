"""The server's secrets on disk: this install's token and an API key kept in a file.

A secret never goes on a command line, where `ps` shows it to every user of the machine; a
secret file readable by others is refused, as ssh refuses such a key.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from edge_agent.errors import ConfigError
from edge_agent.settings import create_private_file


def install_token(path: Path) -> str:
    """This install's token for `edge-agent serve`, made on first use (0600), as Jupyter's:
    without it a loopback server would obey any local process or web page that reaches it."""
    if not path.exists():
        create_private_file(path, (secrets.token_urlsafe(32) + "\n").encode())
    return read_secret_file(path)


def read_secret_file(path: Path) -> str:
    """The secret in `path`, stripped; ConfigError when unreadable, empty or open to others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the secret file {path}: {exc}") from exc
    if os.name == "posix" and mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    if not text:
        raise ConfigError(f"{path} is empty; write the key into it (or delete a token file)")
    return text
