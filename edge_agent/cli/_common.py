"""Options and helpers shared by the CLI's command modules."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def model_options(func: F) -> F:
    """--model / --profile / --context-size / --threads, shared by commands that load one."""
    func = click.option("--threads", type=int, default=None, help="CPU threads")(func)
    func = click.option("--context-size", type=int, default=None, help="context window in tokens")(
        func
    )
    func = click.option("--profile", default=None, help="device profile name, or 'auto'")(func)
    func = click.option(
        "--model", "-m", default=None, help="catalog name, a GGUF path or an ONNX model folder"
    )(func)
    return func


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="machine-readable output")(func)


def settings_from(**flags: Any) -> Any:
    from edge_agent.settings import load_settings

    return load_settings(**flags)


def plan_for(settings: Any) -> Any:
    from edge_agent.models.catalog import load_catalog
    from edge_agent.models.plan import make_plan
    from edge_agent.models.store import ModelStore

    store = ModelStore(settings.models_dir, offline=settings.is_offline)
    return make_plan(settings, load_catalog(), store), store


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))
