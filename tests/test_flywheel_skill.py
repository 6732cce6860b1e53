"""A custom skill defined in config — an MCP server, or a Python entry point — through the
whole loop across processes with a tiny model: served by `edge-agent serve` (teacher-first,
a stand-in teacher answering), logged, synced, trained by `host train --skill`, published,
pulled, canaried and used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tinymodel import make_tiny_llama

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "flywheel_skill.py"


@pytest.mark.parametrize("app", ["mcp", "entry-point"])
def test_a_config_skill_goes_round_the_loop(tmp_path: Path, app: str) -> None:
    model = make_tiny_llama(tmp_path, context=4096).gguf_path
    out = tmp_path / "run"
    args = ["--app", app, "--per-phrase", "3", "--base-per-tool", "2", "--max-steps", "2",
            "--margin", "-1", "--canary-min", "0", "--model", str(model), "--out", str(out),
            "--context-size", "4096"]  # fmt: skip
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=900, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "skill.json").read_text())
    day0 = report["day0"]
    # teacher-first: the stand-in teacher answered every training request, exactly
    assert day0["local_share"] == 0.0 and day0["exact"] == 1.0
    assert report["sync"]["acknowledged"] >= report["data"]["train"]
    host = report["host"]
    assert host["published"] == "thermostat-v1", host
    outcomes = report["pull"]["outcomes"]
    assert [(o["release"], o["action"]) for o in outcomes] == [("thermostat-v1", "activated")]
    # day 1: the device's own requests of the skill run its adapter
    assert report["slm_alone"]["adapters"] == ["thermostat-v1"]
