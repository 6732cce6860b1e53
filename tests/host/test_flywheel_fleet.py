"""The whole loop across processes, with a tiny model: devices log, anonymize and push; the
host curates, clusters, trains, gates and publishes with TUF; the devices pull, verify,
canary and swap the adapter in, then answer with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tinymodel import make_tiny_llama

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "flywheel_fleet.py"


def test_one_turn_runs_across_host_and_device_processes(tmp_path: Path) -> None:
    # the untrained prompt lists every tool: ~5.4k tiny-tokenizer tokens, hence the context
    model = make_tiny_llama(tmp_path, context=8192).gguf_path
    out = tmp_path / "fleet"
    args = ["--devices", "2", "--limit", "24", "--max-steps", "2", "--eval", "curated",
            "--margin", "-1", "--canary-min", "0", "--model", str(model), "--out", str(out),
            "--context-size", "8192"]  # fmt: skip
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=900, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads((out / "fleet.json").read_text())
    assert [p["acknowledged"] for p in report["pushed"]] == [12, 12]
    turn = report["turn"]
    assert turn["published"] == "home-v1" and turn["clusters"]["k"] >= 1
    assert turn["data"]["train"] + turn["data"]["validation"] + turn["data"]["eval"] == 24
    for pulled, answer in zip(report["pulled"], report["answers"], strict=True):
        assert [o["release"] for o in pulled["outcomes"]] == ["home-v1"]
        # an untrained tiny model gets no call right; two steps of LoRA already get some
        assert pulled["outcomes"][0]["action"] == "activated", pulled
        assert answer["adapter"] == "home-v1"  # swapped in: the next turn runs it
