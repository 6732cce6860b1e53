"""``edge-agent home``: the real Home Assistant the `home` skill acts on (its access token)."""

from __future__ import annotations

import sys

import click

url_argument = click.argument("url", required=False)


@click.group()
def home() -> None:
    """The home the `home` skill acts on (home_backend, home_url in the config)."""


@home.group("token")
def token() -> None:
    """Home Assistant's long-lived access token in the OS keyring (service edge-agent-home,
    user = URL). URL defaults to home_url. The token is never taken as an argument (ps shows
    arguments); the variable home_token_env names (HASS_TOKEN) is read before the keyring."""


@token.command("set")
@url_argument
def token_set(url: str | None) -> None:
    """Store the token for URL: a hidden prompt on a terminal, else one line of stdin."""
    from edge_agent.errors import ConfigError
    from edge_agent.skills.home.hass_client import store_home_token

    env, url = _target(url)
    if sys.stdin.isatty():
        secret = click.prompt(f"Home Assistant token for {url}", hide_input=True, err=True)
    else:
        secret = sys.stdin.readline()
    if not secret.strip():
        raise ConfigError("no token given: type it at the prompt or pipe it on stdin")
    store_home_token(url, secret.strip())
    click.echo(f"stored the Home Assistant token for {url} in the OS keyring")
    if env:
        click.echo(f"note: ${env} is set and is read instead of the keyring", err=True)


@token.command("delete")
@url_argument
def token_delete(url: str | None) -> None:
    """Remove the token for URL from the OS keyring."""
    from edge_agent.skills.home.hass_client import delete_home_token

    _, url = _target(url)
    if delete_home_token(url):
        click.echo(f"deleted the Home Assistant token for {url} from the OS keyring")
    else:
        click.echo(f"no token was stored for {url} in the OS keyring")


def _target(url: str | None) -> tuple[str | None, str]:
    """The set variable that overrides the keyring (if any), and the URL."""
    import os

    from edge_agent.errors import ConfigError
    from edge_agent.settings import load_settings

    settings = load_settings()
    url = url or settings.home_url
    if not url:
        raise ConfigError("no URL: pass Home Assistant's URL or set home_url")
    env = settings.home_token_env
    return (env if os.environ.get(env) else None), url.rstrip("/")
