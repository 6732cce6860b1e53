"""Running the CLI in-process the way a user's shell sees it: exit code, stdout, stderr."""

from __future__ import annotations

import pytest

from edge_agent.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
