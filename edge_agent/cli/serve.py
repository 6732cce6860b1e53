"""`edge-agent serve`: the OpenAI-compatible API on this device.

Every request needs a bearer key, even on 127.0.0.1: a web page or another user's process can
reach loopback too. The key is the user's own (``--api-key-file``, ``EDGE_AGENT_API_KEY``) or
else this install's token, made on first start (0600 in the config dir, as Jupyter's) and
printed at each start on a terminal (a service's stderr goes to the journal: there only its
file is named); ``--no-token`` (or ``server_token = false``) drops it on loopback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from edge_agent.cli._common import model_options, settings_from

_PS_WARNING = (
    "warning: --api-key shows the key to every user of this machine (ps, /proc); "
    "use --api-key-file or EDGE_AGENT_API_KEY instead"
)


@click.command()
@model_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="a file (chmod 600) holding the key clients must send; or set EDGE_AGENT_API_KEY",
)
@click.option("--api-key", default=None, help="deprecated: visible in ps; use --api-key-file")
@click.option(
    "--no-token",
    is_flag=True,
    help="without an API key, do not require this install's token (loopback only)",
)
@click.option(
    "--toolsets",
    default=None,
    help="skills served as edge-agent/<name>, comma-separated [default: the skills this "
    "device runs that have tools of their own: `tools` and the [skills.*] tables]",
)
def serve(
    *,
    host: str,
    port: int,
    api_key_file: Path | None,
    api_key: str | None,
    no_token: bool,
    toolsets: str | None,
    **flags: Any,
) -> None:
    """Serve /v1/chat/completions, /v1/responses and /v1/models (OpenAI-compatible,
    streaming). Clients' own tools (``tools=``) are skills of this device: named with
    ``metadata={"edge_agent_skill": NAME}`` or an ``X-Edge-Agent-Skill`` header, routed and
    logged like local turns."""
    from edge_agent.runtime import open_runtime
    from edge_agent.server.app import serve as run_server

    settings = settings_from(**flags, server_token=False if no_token else None)
    key, token = _key(settings, api_key, api_key_file)  # before the model loads: fail fast
    toolsets = served_skills(settings) if toolsets is None else toolsets
    with open_runtime(settings, size_to_skills=False) as rt:  # clients bring tools
        app = build_app(rt, api_key=key, toolsets=toolsets)
        worker = _sync_worker(rt)
        click.echo(f"serving {rt.model_name} on http://{host}:{port}/v1", err=True)
        if token:  # shown on a terminal only: a service's stderr goes to the journal
            shown = key if sys.stderr.isatty() else "<not shown>"
            click.echo(
                f"token: {shown} (kept in {settings.server_token_path}); clients send "
                "'Authorization: Bearer <token>'",
                err=True,
            )
        try:
            run_server(app, host=host, port=port, api_key=key)
        finally:
            if worker:
                worker.stop()  # before the runtime closes the log


def _key(settings: Any, api_key: str | None, key_file: Path | None) -> tuple[str | None, bool]:
    """The key clients must send, and whether it is this install's token."""
    from edge_agent.server.keys import install_token, read_secret_file

    if api_key is not None:
        click.echo(_PS_WARNING, err=True)
    env = os.environ.get("EDGE_AGENT_API_KEY")
    key = read_secret_file(key_file) if key_file else api_key or env
    if key or not settings.server_token:
        return key or None, False
    return install_token(settings.server_token_path), True


def build_app(rt: Any, *, api_key: str | None = None, toolsets: str = "") -> Any:
    """The app `serve` runs over an open runtime: its local toolsets as models, clients'
    own tools as skills of this runtime (its log, its router), one guard."""
    from edge_agent.server.app import create_app
    from edge_agent.server.client_tools import ClientAgents

    s = rt.settings
    agents = {name: _factory(rt, name) for name in toolsets.split(",") if name}
    clients = ClientAgents(lambda tools, skill: rt.agent(tools, skill=skill), settings=s)
    # the locked view: the sync loop may hot-swap an adapter while requests are served
    return create_app(
        rt.shared_backend(), toolsets=agents, model_name=rt.model_name, api_key=api_key,
        allowed_hosts=s.server_allowed_hosts, allowed_origins=s.server_allowed_origins,
        max_body_bytes=s.server_max_body_bytes, client_agents=clients,
    )  # fmt: skip


def served_skills(settings: Any) -> str:
    """The device's skills that run their own tools (a client's skill has none to serve)."""
    from edge_agent.errors import EdgeAgentError
    from edge_agent.skills.registry import device_skills, get_skill

    names = []
    for name in device_skills(settings):
        try:
            if get_skill(name, settings).toolset is not None:
                names.append(name)
        except EdgeAgentError as exc:  # served without it; the reason in one line
            click.echo(f"not serving skill {name!r}: {exc}", err=True)
    return ",".join(names)


def _sync_worker(rt: Any) -> Any:
    """The background sync loop, started. After each push it asks the teacher for late
    labels and pulls, canaries and swaps new adapters. None without a log."""
    from edge_agent.adapters.canary import adapter_tasks
    from edge_agent.cli.sync import device_scrubber
    from edge_agent.sync import worker_for

    log, scrubber = rt.log(), device_scrubber(rt.settings)
    tasks = _label_tasks(rt) + adapter_tasks(rt)
    worker = worker_for(rt.settings, log, scrubber, tasks=tasks) if log else None
    if worker:
        worker.start()
    return worker


def _label_tasks(rt: Any) -> list[Any]:
    """Late teacher labels for turns served while the remote was down, each sync round."""
    from edge_agent.routing.labels import label_queue

    s = rt.settings
    if s.remote_label_batch == 0:
        return []
    queue = label_queue(rt, limit=s.remote_label_batch,
                        max_age_s=s.remote_label_max_age_days * 86_400)  # fmt: skip
    return [] if queue is None else [lambda _client: queue.round()]


def _factory(rt: Any, name: str) -> Any:
    return lambda: rt.agent(name)
