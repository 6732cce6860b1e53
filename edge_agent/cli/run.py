"""`edge-agent run` and `edge-agent chat`: agent turns on this device."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from edge_agent.cli._common import F, echo_json, json_option, model_options, settings_from
from edge_agent.errors import EdgeAgentError, TurnTimeoutError

# Without a system message SmolLM2's template inserts its own stock one, after which the
# Q4_1 model answers "capital of France?" with a list of Paris landmarks; a short one fixes it.
CHAT_SYSTEM = "You are a helpful assistant."


def agent_options(func: F) -> F:
    func = click.option("--yes", "-y", is_flag=True, help="approve calls that need confirming")(
        func
    )
    func = click.option("--area", default=None, help="the speaker's area (e.g. Kitchen)")(func)
    func = click.option(
        "--tools",
        default=None,
        help="skill: home (default), system, one in config.toml, or none for plain chat",
    )(func)
    return func


@click.command()
@click.argument("prompt")
@model_options
@agent_options
@click.option("--max-tokens", type=int, default=256, show_default=True, help="plain chat only")
@click.option(
    "--route",
    type=click.Choice(["auto", "local", "remote"]),
    default="auto",
    show_default=True,
    help="the local model, the remote one (remote_url), or the router's choice",
)
@json_option
def run(prompt: str, yes: bool, max_tokens: int, route: Any, as_json: bool, **flags: Any) -> None:
    """One turn: the local model calls the toolset's tools (or chats with --tools none)."""
    from edge_agent.runtime import open_runtime

    started = time.perf_counter()
    settings = _with_known_skill(settings_from(**flags))
    with open_runtime(settings) as rt:
        if rt.settings.tools == "none":
            _chat_turn(rt, prompt, max_tokens, as_json, started)
            return
        agent = rt.agent(rt.settings.tools, confirm=_confirmer(yes))
        try:
            result = agent.run(prompt, route=route)
        except TurnTimeoutError as exc:  # what ran before the deadline, then the one line
            if exc.result is not None:
                _report(exc.result, as_json)
            raise
    _report(result, as_json)


def _with_known_skill(settings: Any) -> Any:
    """The settings, once their skill is known to exist: a typo fails before the model loads."""
    from edge_agent.skills.registry import get_skill

    if settings.tools != "none":
        get_skill(settings.tools, settings)
    return settings


def _confirmer(yes: bool) -> Any:
    """Ask y/N on a terminal; with --yes approve; with no terminal refuse (never hang). A call
    the request did not ask for is never approved by --yes: it is asked, or refused."""

    def confirm(call: Any, decision: Any) -> bool:
        if yes and not decision.ungrounded:
            return True
        if not sys.stdin.isatty():
            return False
        args = ", ".join(f"{k}={v!r}" for k, v in call.arguments.items())
        return click.confirm(f"{call.name}({args}): {decision.reason}. Allow?", default=False)

    return confirm


def _report(result: Any, as_json: bool) -> None:
    from edge_agent.errors import ConfirmationRequiredError

    if as_json:
        echo_json(_result_json(result))
    else:
        for outcome in result.tool_calls:
            args = ", ".join(f"{k}={v!r}" for k, v in outcome.call.arguments.items())
            detail = outcome.error or _short(outcome.result)
            click.echo(f"→ {outcome.call.name}({args}) [{outcome.status}] {detail}")
        if result.answer:
            click.echo(result.answer)
        if result.routing is not None and result.route != "local":
            why = result.routing.remote_error or result.routing.reason
            click.echo(f"[{result.route}: {why}]", err=True)
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
    result = _plain_turn(rt, prompt, max_tokens, echo=not as_json, started=started)
    if as_json:
        echo_json(
            {
                "answer": result.answer,
                "tool_calls": [],
                "model": result.model,
                "adapter": result.adapter,
                "latency_ms": round(result.latency_ms, 1),
                "usage": result.usage.model_dump(),
            }
        )


def _plain_turn(rt: Any, prompt: str, max_tokens: int, echo: bool, started: float) -> Any:
    """One plain-chat turn (no tools, no schema), logged in the sealed log like any turn."""
    from edge_agent.backends.base import GenerationRequest
    from edge_agent.types import AgentResult, Message

    messages = [Message(role="system", content=CHAT_SYSTEM), Message(role="user", content=prompt)]
    request = GenerationRequest(messages=messages, max_tokens=max_tokens)
    text, done = _stream(rt.backend, request, echo=echo)
    result = AgentResult(
        request=prompt, answer=text, model=rt.model_name, adapter=rt.backend.active_adapter,
        steps=1, latency_ms=(time.perf_counter() - started) * 1000,
    )  # fmt: skip
    if getattr(done, "usage", None) is not None:
        result.usage = done.usage
    _log_turn(rt, result, messages)
    return result


def _log_turn(rt: Any, result: Any, messages: Any) -> None:
    """As `Agent` logs its turns: a log failure is a warning, never a failed turn."""
    log = rt.log()
    if log is None:
        return
    try:
        log.record(result, messages=messages)
    except EdgeAgentError as exc:
        click.echo(f"warning: turn {result.id} not logged: {exc}", err=True)


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


@click.command()
@model_options
@agent_options
def chat(yes: bool, **flags: Any) -> None:
    """Interactive turns with the agent (line editing and history; Ctrl-D to quit)."""
    from edge_agent.runtime import open_runtime

    settings = _with_known_skill(settings_from(**flags))
    _enable_history(settings.data_dir / "chat_history")
    with open_runtime(settings) as rt:
        reply = _plain_replier(rt) if settings.tools == "none" else _agent_replier(rt, yes)
        while (line := _read_line()) is not None:
            if line.strip():
                reply(line)


def _plain_replier(rt: Any) -> Callable[[str], Any]:
    click.echo(f"{rt.model_name}, plain chat (no tools); Ctrl-D quits")
    return lambda line: _plain_turn(rt, line, 256, echo=True, started=time.perf_counter())


def _agent_replier(rt: Any, yes: bool) -> Callable[[str], Any]:
    agent = rt.agent(rt.settings.tools, confirm=_confirmer(yes))
    click.echo(f"{rt.model_name} with the {agent.toolset.name} tools; Ctrl-D quits")
    return lambda line: _chat_reply(agent, line)


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
