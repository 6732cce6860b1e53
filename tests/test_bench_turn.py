"""scripts/bench/bench_turn.py end to end on the tiny model: two HA rows, agent and raw
llama-cpp-python side by side, the report written. No timed assertions: what is checked is
that the raw side replays exactly what the agent generated and the stages add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.tinymodel import make_tiny_llama

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench" / "bench_turn.py"


def test_the_turn_benchmark_replays_each_row_raw_and_writes_its_table(tmp_path: Path) -> None:
    model = make_tiny_llama(tmp_path, context=8192).gguf_path
    out = tmp_path / "results"
    args = ["--limit", "2", "--threads", "1", "--cold-reps", "1", "--model", str(model),
            "--context-size", "8192", "--out", str(out), "--compare",
            "--before-tree", str(SCRIPT.parents[2])]  # fmt: skip
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "turn.json").read_text())
    before, after = result["passes"]
    assert (before["label"], after["label"]) == ("before", "after")
    assert before["n_ctx"] == 8192 and before["kv_cache_type"] == "f16"
    assert before["retry_failed_calls"] is True and after["retry_failed_calls"] is None
    for side in (before, after):
        assert side["threads"] == 1 and side["rows"] == 2 and side["adapter"] is None
    for row in before["per_row"] + after["per_row"]:
        assert row["raw_same_prompt"]  # llama.cpp tokenized the agent's prompt identically
        assert row["out_tokens"] > 0 and row["raw_ms"] > 0
        # every output token was forced or sampled (a sampled end-of-text writes none)
        assert row["forced_tokens"] + row["sampled_tokens"] >= row["out_tokens"]
        assert row["prompt_tokens"] == row["cached_tokens"] + row["raw_prompt_eval_tokens"]
    assert set(result["cold"]) == {"before", "after"}
    for cold in result["cold"].values():
        assert cold["outcome"] in {"answered", "failed"} and cold["peak_rss_mb"] > 0
    assert result["importtime"]["top"]
    table = (out / "turn.md").read_text()
    assert "ratio agent ÷ raw" in table and "log write" in table and "load average" in table
    assert "before, 1 thread(s)" in table and "cold start, after" in table
