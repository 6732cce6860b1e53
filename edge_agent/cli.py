"""The ``edge-agent`` command line.

Commands stay thin: they read settings, call the library and print. Library errors become
one readable line on stderr and a non-zero exit here, and only here (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from edge_agent.errors import EdgeAgentError

F = TypeVar("F", bound=Callable[..., Any])


def model_options(func: F) -> F:
    """--model / --profile / --context-size / --threads, shared by commands that load one."""
    func = click.option("--threads", type=int, default=None, help="CPU threads")(func)
    func = click.option("--context-size", type=int, default=None, help="context window in tokens")(
        func
    )
    func = click.option("--profile", default=None, help="device profile name, or 'auto'")(func)
    func = click.option("--model", "-m", default=None, help="catalog name or path to a GGUF")(func)
    return func


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="machine-readable output")(func)


@click.group()
@click.version_option(package_name="edge-agent")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Small language models that run agent tool calls on this device."""
    ctx.obj = {"debug": debug}


def _settings(**flags: Any) -> Any:
    from edge_agent.settings import load_settings

    return load_settings(**flags)


def _plan(settings: Any) -> Any:
    from edge_agent.catalog import load_catalog
    from edge_agent.plan import make_plan
    from edge_agent.store import ModelStore

    store = ModelStore(settings.models_dir, offline=settings.is_offline)
    return make_plan(settings, load_catalog(), store), store


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


# -- run ----------------------------------------------------------------------------------
@cli.command()
@click.argument("prompt")
@model_options
@click.option("--system", default=None, help="system prompt")
@click.option("--max-tokens", type=int, default=256, show_default=True)
@json_option
def run(prompt: str, system: str | None, max_tokens: int, as_json: bool, **flags: Any) -> None:
    """Run one chat turn on the local model, streamed."""
    started = time.perf_counter()
    settings = _settings(**flags)
    plan, store = _plan(settings)
    backend = _open_backend(plan, store)
    from edge_agent.backends.base import GenerationRequest, Message

    messages = [Message(role="system", content=system)] if system else []
    messages.append(Message(role="user", content=prompt))
    request = GenerationRequest(messages=messages, max_tokens=max_tokens)
    with backend:
        text, done = _stream(backend, request, echo=not as_json)
    if as_json:
        _echo_json(_run_json(plan, text, done, started))


def _open_backend(plan: Any, store: Any) -> Any:
    from edge_agent.backends import open_backend

    path = store.ensure(plan.entry) if plan.entry.source.kind != "path" else plan.entry.source.path
    return open_backend(plan.profile.backend, model_path=path, **plan.backend_options())


def _stream(backend: Any, request: Any, echo: bool) -> tuple[str, Any]:
    parts: list[str] = []
    done = None
    for chunk in backend.generate(request):
        if chunk.text:
            parts.append(chunk.text)
            if echo:
                click.echo(chunk.text, nl=False)
        if getattr(chunk, "finish_reason", None):
            done = chunk
    if echo:
        click.echo()
    return "".join(parts), done


def _run_json(plan: Any, text: str, done: Any, started: float) -> dict[str, Any]:
    usage = getattr(done, "usage", None)
    return {
        "answer": text,
        "model": plan.entry.name,
        "adapter": None,
        "tool_calls": [],
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "usage": usage.model_dump() if usage is not None else None,
    }


# -- profile ------------------------------------------------------------------------------
@cli.command()
@model_options
@json_option
def profile(as_json: bool, **flags: Any) -> None:
    """Show the detected device, the model it would run, and why (nothing loads)."""
    plan, _ = _plan(_settings(**flags))
    data = plan.to_dict()
    if as_json:
        _echo_json(data)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in data.items():
        if key not in ("why", "machine"):
            table.add_row(key, str(value))
    for key, value in data["machine"].items():
        table.add_row(f"machine.{key}", str(value))
    console = Console()
    console.print(table)
    console.print("[bold]why[/bold]")
    for reason in data["why"]:
        console.print(f"  • {reason}")


# -- models -------------------------------------------------------------------------------
@cli.group()
def models() -> None:
    """The model catalog and the local store."""


@models.command("list")
@click.option("--profile", default=None, help="device profile name, or 'auto'")
@json_option
def models_list(as_json: bool, profile: str | None) -> None:
    """Every catalog model, whether it is on this device and whether it fits."""
    from edge_agent.catalog import load_catalog
    from edge_agent.plan import assess_catalog, resolve_device
    from edge_agent.store import ModelStore

    settings = _settings(profile=profile)
    store = ModelStore(settings.models_dir, offline=settings.is_offline)
    rows = [
        _model_row(c)
        for c in assess_catalog(settings, load_catalog(), store, resolve_device(settings))
    ]
    if as_json:
        _echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "params", "quant", "size MB", "RAM MB @ctx", "fits", "local", "license")
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['parameters'] / 1e6:.0f}M",
            r["quantization"],
            f"{r['file_size_mb']:.0f}{'~' if r['size_estimated'] else ''}",
            f"{r['ram_mb']:.0f} @{r['context_size']}",
            "yes" if r["fits"] else "no",
            "yes" if r["available"] else "-",
            r["license"],
        )
    Console().print(table)


def _model_row(c: Any) -> dict[str, Any]:
    e = c.entry
    return {
        "name": e.name,
        "family": e.family,
        "base_model": e.base_model,
        "parameters": e.parameters,
        "quantization": e.quantization,
        "file_size_mb": e.file_size_mb,
        "size_estimated": e.size_estimated,
        "license": e.license,
        "source": e.source.model_dump(exclude_none=True),
        "context_size": c.context_size,
        "ram_mb": round(c.ram_mb),
        "fits": c.fits,
        "available": c.available,
    }


@models.command("pull")
@click.argument("name")
def models_pull(name: str) -> None:
    """Fetch a catalog model into the local store and verify it."""
    from edge_agent.catalog import load_catalog
    from edge_agent.store import ModelStore

    settings = _settings()
    store = ModelStore(settings.models_dir, offline=settings.is_offline)
    path = store.pull(load_catalog().get(name))
    click.echo(f"{name}: {path}")


# -- entry point --------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Console script: run the CLI, turning edge-agent errors into one line and an exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="edge-agent", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except EdgeAgentError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
