"""The ``edge-agent`` command line.

Commands stay thin: they read settings, call the library and print. Library errors become
one readable line on stderr and a non-zero exit here, and only here (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import contextlib
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


# -- run / chat ---------------------------------------------------------------------------
def agent_options(func: F) -> F:
    func = click.option("--yes", "-y", is_flag=True, help="approve calls that need confirming")(
        func
    )
    func = click.option("--area", default=None, help="the speaker's area (e.g. Kitchen)")(func)
    func = click.option(
        "--tools", default=None, help="toolset: home (default), system, or none for plain chat"
    )(func)
    return func


@cli.command()
@click.argument("prompt")
@model_options
@agent_options
@click.option("--max-tokens", type=int, default=256, show_default=True, help="plain chat only")
@json_option
def run(prompt: str, yes: bool, max_tokens: int, as_json: bool, **flags: Any) -> None:
    """One turn: the local model calls the toolset's tools (or chats with --tools none)."""
    from edge_agent.runtime import open_runtime

    started = time.perf_counter()
    with open_runtime(_settings(**flags)) as rt:
        if rt.settings.tools == "none":
            _chat_turn(rt, prompt, max_tokens, as_json, started)
            return
        result = rt.agent(rt.settings.tools, confirm=_confirmer(yes)).run(prompt)
    _report(result, as_json)


def _confirmer(yes: bool) -> Any:
    """Ask y/N on a terminal; with --yes approve; with no terminal refuse (never hang)."""

    def confirm(call: Any, decision: Any) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        args = ", ".join(f"{k}={v!r}" for k, v in call.arguments.items())
        return click.confirm(f"{call.name}({args}): {decision.reason}. Allow?", default=False)

    return confirm


def _report(result: Any, as_json: bool) -> None:
    from edge_agent.errors import ConfirmationRequiredError

    if as_json:
        _echo_json(_result_json(result))
    else:
        for outcome in result.tool_calls:
            args = ", ".join(f"{k}={v!r}" for k, v in outcome.call.arguments.items())
            detail = outcome.error or _short(outcome.result)
            click.echo(f"→ {outcome.call.name}({args}) [{outcome.status}] {detail}")
        if result.answer:
            click.echo(result.answer)
    if result.outcome == "needs_confirmation":
        raise ConfirmationRequiredError(
            "a call needs confirmation and none was given: re-run with --yes, or on a terminal"
        )
    if result.outcome == "failed":
        raise _failure(result)


def _failure(result: Any) -> Exception:
    from edge_agent.errors import AgentFailedError

    return AgentFailedError(result.error or "the turn failed")


def _result_json(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = result.model_dump(mode="json")
    data["tool_calls"] = [
        {
            "name": o["call"]["name"],
            "arguments": o["call"]["arguments"],
            "result": o["result"],
            "status": o["status"],
            "effect": o["effect"],
            "error": o["error"],
        }
        for o in data["tool_calls"]
    ]
    return data


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chat_turn(rt: Any, prompt: str, max_tokens: int, as_json: bool, started: float) -> None:
    from edge_agent.backends.base import GenerationRequest, Message

    request = GenerationRequest(
        messages=[Message(role="user", content=prompt)], max_tokens=max_tokens
    )
    text, done = _stream(rt.backend, request, echo=not as_json)
    if as_json:
        usage = getattr(done, "usage", None)
        _echo_json(
            {
                "answer": text,
                "tool_calls": [],
                "model": rt.model_name,
                "adapter": rt.backend.active_adapter,
                "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                "usage": usage.model_dump() if usage is not None else None,
            }
        )


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


@cli.command()
@model_options
@agent_options
def chat(yes: bool, **flags: Any) -> None:
    """Interactive turns with the agent (line editing and history; Ctrl-D to quit)."""
    from edge_agent.runtime import open_runtime

    settings = _settings(**flags)
    _enable_history(settings.data_dir / "chat_history")
    with open_runtime(settings) as rt:
        agent = rt.agent(
            settings.tools if settings.tools != "none" else "home", confirm=_confirmer(yes)
        )
        click.echo(f"{rt.model_name} with the {agent.toolset.name} tools; Ctrl-D quits")
        while (line := _read_line()) is not None:
            if line.strip():
                _chat_reply(agent, line)


def _read_line() -> str | None:
    try:
        return input("> ")
    except EOFError:
        click.echo()
        return None


def _chat_reply(agent: Any, line: str) -> None:
    result = agent.run(line)
    try:
        _report(result, as_json=False)
    except EdgeAgentError as exc:
        click.echo(f"error: {exc}", err=True)


def _enable_history(path: Any) -> None:
    try:
        import atexit
        import readline
    except ImportError:  # pragma: no cover - Windows without pyreadline
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # no history yet
        readline.read_history_file(path)
    atexit.register(readline.write_history_file, path)


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
