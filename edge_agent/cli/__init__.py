"""The ``edge-agent`` command line.

Commands stay thin: they read settings, call the library and print; each group lives in its
own module here. Library errors become one readable line on stderr and a non-zero exit in
``main`` and only there (``--debug`` shows the traceback).
"""

from __future__ import annotations

import sys

import click

from edge_agent.cli import (
    adapters,
    anonymize,
    home,
    host,
    log,
    models,
    quantize,
    route,
    run,
    serve,
    sync,
)
from edge_agent.errors import EdgeAgentError


@click.group()
@click.version_option(package_name="edge-agent")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Small language models that run agent tool calls on this device."""
    ctx.obj = {"debug": debug}


cli.add_command(run.run)
cli.add_command(run.chat)
cli.add_command(models.profile)
cli.add_command(models.models)
cli.add_command(anonymize.anonymize)
cli.add_command(log.log)
cli.add_command(serve.serve)
cli.add_command(host.host)
cli.add_command(sync.sync)
cli.add_command(adapters.adapters)
cli.add_command(route.route)
cli.add_command(quantize.quantize)
cli.add_command(home.home)


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
