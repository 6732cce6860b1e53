"""The README's Python example, run exactly as written, on the real default model."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.integration


def readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("### From Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README lost its Python example"
    return match.group(1)


def test_the_example_uses_only_the_public_api() -> None:
    import edge_agent

    tree = ast.parse(readme_example())
    imported = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]
    assert imported and all(module == "edge_agent" for module, _ in imported)
    assert {name for _, name in imported} <= set(edge_agent.__all__)


def test_the_readme_example_runs_a_turn(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(readme_example(), encoding="utf-8")
    env = {**os.environ, "EDGE_AGENT_HOME": str(tmp_path / "home"), "EDGE_AGENT_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    outcome, rest = done.stdout.strip().split(" ", 1)
    assert outcome in {"answered", "failed", "needs_confirmation"}
    calls = ast.literal_eval(rest[: rest.index("]") + 1])
    assert {name for name, _ in calls} <= {"set_temperature", "read_sensor"}
    assert all(status in {"ok", "needs_confirmation", "denied"} for _, status in calls)
    # the turn went through the sealed log like any other
    assert list((tmp_path / "home").rglob("*.db")), "the turn was not logged"
