"""Cold start (issue 16): a command imports what it runs and nothing else.

Each check runs in a fresh interpreter, since this test process has imported everything
already, and looks at ``sys.modules`` afterwards; no timings are asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from edge_agent.cli import cli

# What `edge-agent run` never needs: the servers, the host side, sync, the remote router, the
# ONNX runtime, training libraries, the hub client (the default model ships in a package).
NOT_FOR_RUN = {
    "edge_agent.cli.host",
    "edge_agent.cli.serve",
    "edge_agent.cli.sync",
    "edge_agent.host",
    "edge_agent.server",
    "edge_agent.sync",
    "edge_agent.routing.remote",
    "fastapi",
    "starlette",
    "uvicorn",
    "onnxruntime",
    "onnxruntime_genai",
    "torch",
    "peft",
    "huggingface_hub",
    "httpx2",
}
COMMANDS = {"adapters", "anonymize", "chat", "home", "host", "log", "models", "profile"}
COMMANDS |= {"quantize", "route", "run", "serve", "sync"}


def _modules_after(code: str, *args: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (which has ``argv``)."""
    code += "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_resolving_run_imports_no_other_command() -> None:
    loaded = _modules_after(
        "import click\n"
        "from edge_agent.cli import cli\n"
        "command = cli.get_command(click.Context(cli), 'run')\n"
        "assert command is not None and command.name == 'run'\n"
    )
    assert "edge_agent.cli.run" in loaded
    assert sorted(loaded & (NOT_FOR_RUN | {"keyring", "edge_agent.runtime", "llama_cpp"})) == []


def test_every_command_is_listed_and_resolves() -> None:
    ctx = click.Context(cli)
    assert set(cli.list_commands(ctx)) == COMMANDS
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
    assert cli.get_command(ctx, "nope") is None


@pytest.mark.integration
def test_a_home_command_imports_only_what_it_runs() -> None:
    """The real default model answers a home command twice in one home; the second run (the
    log exists and is migrated, its key is in a file) loads no keyring, no sqlite_utils and
    nothing else `run` does not need."""
    code = (
        "import sys\n"
        "from edge_agent.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
    )
    argv = ["run", "turn on the kitchen light", "--area", "Kitchen", "--yes", "--json"]
    argv += ["--threads", "1", "--profile", "generic-x86-64"]
    _modules_after(code, *argv)
    loaded = _modules_after(code, *argv)
    assert {"llama_cpp", "edge_agent.logstore", "edge_agent.skills.home"} <= loaded
    assert sorted(loaded & (NOT_FOR_RUN | {"keyring", "sqlite_utils"})) == []
