"""The remote model's API key: from an environment variable, else the OS keyring."""

from __future__ import annotations

import logging
import os

from pydantic import SecretStr

from edge_agent.errors import ConfigError

KEYRING_SERVICE = "edge-agent-remote"
logger = logging.getLogger(__name__)


def api_key(url: str, env_name: str | None) -> SecretStr | None:
    """The key from the named environment variable, else the OS keyring entry
    (service ``edge-agent-remote``, user = the URL), else None (an endpoint without auth)."""
    if env_name:
        value = os.environ.get(env_name)
        return SecretStr(value) if value else None
    try:
        import keyring
        from keyring.errors import KeyringError

        value = keyring.get_password(KEYRING_SERVICE, url)
    except KeyringError as exc:  # no backend (headless Linux), locked: an endpoint without a key
        logger.debug("no remote API key in the OS keyring (%s)", exc)
        return None
    except Exception as exc:  # backends (D-Bus, macOS) raise their own types
        logger.warning("the OS keyring failed, using no remote API key: %r", exc)
        return None
    return SecretStr(value) if value else None


def store_api_key(url: str, key: str) -> None:
    """Save the key where ``api_key`` reads it: service ``edge-agent-remote``, user = the URL."""
    import keyring

    try:
        keyring.set_password(KEYRING_SERVICE, url, key)
    except Exception as exc:  # backends (D-Bus, macOS) raise their own types
        raise _keyring_failed("store", exc) from exc


def delete_api_key(url: str) -> bool:
    """Remove the URL's key from the OS keyring; False when none was stored."""
    import keyring
    from keyring.errors import PasswordDeleteError

    try:
        keyring.delete_password(KEYRING_SERVICE, url)
    except PasswordDeleteError:
        return False
    except Exception as exc:
        raise _keyring_failed("delete", exc) from exc
    return True


def keyring_has_key(url: str) -> bool:
    """Whether the OS keyring holds a key for the URL (unlike ``api_key``, a broken keyring
    raises: the user asked about it)."""
    import keyring

    try:
        return bool(keyring.get_password(KEYRING_SERVICE, url))
    except Exception as exc:
        raise _keyring_failed("read", exc) from exc


def _keyring_failed(action: str, exc: Exception) -> ConfigError:
    # The backend's own message can run to a paragraph; its type says enough.
    return ConfigError(
        f"the OS keyring could not {action} the remote API key ({type(exc).__name__}): "
        "install or unlock a keyring backend, or name an environment variable in "
        "remote_api_key_env instead"
    )


# --- circuit breaker ------------------------------------------------------------------------
