"""Real MCP servers for the tests, written with the official `mcp` SDK and run as subprocesses:
over stdio (`command`) or streamable HTTP on 127.0.0.1 (`http_server`)."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).parent
THERMOSTAT = HERE / "thermostat.py"
CATALOG = HERE / "catalog.py"


def command(server: Path, *args: str) -> list[str]:
    """How to start `server` over stdio."""
    return [sys.executable, str(server), *args]


@contextmanager
def http_server(server: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """`server` serving streamable HTTP on 127.0.0.1; yields its URL once it listens."""
    with subprocess.Popen(
        [*command(server), "--http"], stdout=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    ) as proc:  # fmt: skip
        try:
            yield f"http://127.0.0.1:{_announced_port(proc)}/mcp"
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _announced_port(proc: subprocess.Popen[str], timeout_s: float = 20.0) -> int:
    """The port from the server's ``PORT <n>`` line (printed once its socket listens)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if selector.select(deadline - time.monotonic()):
                line = proc.stdout.readline()
                if line.startswith("PORT "):
                    return int(line.split()[1])
                if not line:
                    break
    raise RuntimeError(f"the MCP server did not announce its port (exit code {proc.poll()})")
