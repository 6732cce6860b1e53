"""The benchmark harness, driven by ScriptedBackend (the test seam) answering gold calls."""

import json

from edge_agent import prompt
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.skills.home.dataset import load_split
from edge_agent.skills.home.evaluate import evaluate
from edge_agent.skills.home.toolset import home_toolset


def gold_outputs(rows):
    ts = home_toolset()
    return [prompt.call_json(row.call(), ts) for row in rows]


def test_gold_calls_score_100_percent():
    rows = load_split("test")[:25]
    ev = evaluate(ScriptedBackend(gold_outputs(rows)), rows)
    assert ev.report.n == 25
    assert ev.report.exact_match == 1.0 and ev.report.function_accuracy == 1.0
    assert len(ev.latencies_ms) == 25 and all(ms > 0 for ms in ev.latencies_ms)
    summary = ev.summary()
    assert summary["p50_ms"] == sorted(ev.latencies_ms)[12]  # the 13th of 25
    assert summary["p50_ms"] <= summary["p95_ms"] <= max(ev.latencies_ms)


def test_wrong_and_missing_calls_are_scored_as_such():
    rows = load_split("test")[:4]
    outs = gold_outputs(rows)
    outs[0] = json.dumps({"answer": "no idea"})  # no call
    outs[1] = json.dumps({"name": "HassNevermind", "arguments": {}})  # wrong tool
    ev = evaluate(ScriptedBackend(outs), rows)
    assert ev.predictions[rows[0].id] is None
    assert ev.report.exact_match == 0.5
    assert ev.report.function_accuracy == 0.5


def test_each_row_runs_in_its_own_home_with_its_speaker_area():
    rows = [r for r in load_split("test") if r.speaker_area][:3]
    backend = ScriptedBackend(gold_outputs(rows))
    evaluate(backend, rows)
    for row, request in zip(rows, backend.requests, strict=True):
        assert f"Speaker area: {row.speaker_area}" in request.messages[-1].content
