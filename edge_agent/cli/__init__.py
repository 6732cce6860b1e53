"""The ``edge-agent`` command line.

Commands stay thin: they read settings, call the library and print; each group lives in its
own module here. Library errors become one readable line on stderr and a non-zero exit in
``main`` and only there (``--debug`` shows the traceback).
"""

from __future__ import annotations

import importlib
import sys

import click

from edge_agent.errors import EdgeAgentError

# command → "module:function" in this package. A command's module is imported when that
# command runs (or help lists it), so `run` never loads the server, host or sync code.
COMMANDS = {
    "run": "run:run",
    "chat": "run:chat",
    "profile": "models:profile",
    "models": "models:models",
    "anonymize": "anonymize:anonymize",
    "log": "log:log",
    "serve": "serve:serve",
    "host": "host:host",
    "sync": "sync:sync",
    "adapters": "adapters:adapters",
    "route": "route:route",
    "quantize": "quantize:quantize",
    "home": "home:home",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, name = target.split(":")
        command: click.Command = getattr(importlib.import_module(f"{__name__}.{module}"), name)
        return command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="edge-agent")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Small language models that run agent tool calls on this device."""
    ctx.obj = {"debug": debug}


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
