"""`edge-agent serve`: the OpenAI-compatible API on this device."""

from __future__ import annotations

import os
from typing import Any

import click

from edge_agent.cli._common import model_options, settings_from


@click.command()
@model_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--api-key",
    default=None,
    help="required when binding beyond 127.0.0.1 (or EDGE_AGENT_API_KEY)",
)
@click.option(
    "--toolsets", default="home,system", show_default=True, help="served as edge-agent/<name>"
)
def serve(host: str, port: int, api_key: str | None, toolsets: str, **flags: Any) -> None:
    """Serve /v1/chat/completions and /v1/models (OpenAI-compatible, streaming)."""
    from edge_agent.adapters.canary import adapter_tasks
    from edge_agent.cli.sync import device_scrubber
    from edge_agent.runtime import open_runtime
    from edge_agent.server.app import create_app
    from edge_agent.server.app import serve as run_server
    from edge_agent.sync import worker_for

    key = api_key or os.environ.get("EDGE_AGENT_API_KEY")
    with open_runtime(settings_from(**flags)) as rt:
        agents = {name: _factory(rt, name) for name in toolsets.split(",") if name}
        # the locked view: the sync loop may hot-swap an adapter while requests are served
        backend = rt.shared_backend()
        app = create_app(backend, toolsets=agents, model_name=rt.model_name, api_key=key)
        log = rt.log()
        tasks = adapter_tasks(rt)  # pulls, canaries and swaps new adapters after each push
        scrubber = device_scrubber(rt.settings)
        worker = worker_for(rt.settings, log, scrubber, tasks=tasks) if log else None
        if worker:
            worker.start()
        click.echo(f"serving {rt.model_name} on http://{host}:{port}/v1", err=True)
        try:
            run_server(app, host=host, port=port, api_key=key)
        finally:
            if worker:
                worker.stop()  # before the runtime closes the log


def _factory(rt: Any, name: str) -> Any:
    return lambda: rt.agent(name)
