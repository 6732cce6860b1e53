"""Run the agent over dataset rows and score its first call: the HA benchmark harness.

Each row gets its own home (its fixtures, inline ones included) and its context area as the
speaker's area, exactly as the split defines. The same harness serves the benchmarks, the
flywheel's gate and the router's calibration, so all three measure the same thing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edge_agent.agent import Agent, AgentConfig
from edge_agent.backends.base import Backend
from edge_agent.skills.home.dataset import Row
from edge_agent.skills.home.score import Report, score
from edge_agent.skills.home.toolset import home_toolset
from edge_agent.types import AgentResult, ToolCall


@dataclass
class Evaluation:
    report: Report
    predictions: dict[str, ToolCall | None]
    results: dict[str, AgentResult] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # request → validated first call

    def latency(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def summary(self) -> dict[str, float]:
        r = self.report
        return {
            "n": r.n,
            "right_tool": r.function_accuracy,
            "exact": r.exact_match,
            "slot_f1": r.slot_f1,
            "p50_ms": self.latency(0.5),
            "p95_ms": self.latency(0.95),
            "mean_ms": statistics.fmean(self.latencies_ms) if self.latencies_ms else 0.0,
        }


def first_call(result: AgentResult) -> ToolCall | None:
    return result.tool_calls[0].call if result.tool_calls else None


def evaluate(
    backend: Backend,
    rows: Sequence[Row],
    *,
    adapter: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """One agent step per row (the call is what is scored; it runs on the row's simulated
    home, where a failing target is the home's answer, not the model's mistake)."""
    predictions: dict[str, ToolCall | None] = {}
    results: dict[str, AgentResult] = {}
    latencies: list[float] = []
    config = AgentConfig(max_steps=1, repair_attempts=0, stop_after_call=True)
    for i, row in enumerate(rows):
        tools = home_toolset(inventory=row.inventory())
        agent = Agent(backend, tools, config=config, adapter=adapter)
        started = time.perf_counter()
        result = agent.run(row.sentence, area=row.speaker_area, confirmed=True)
        latencies.append(result.timings.get("generate_ms", (time.perf_counter() - started) * 1000))
        predictions[row.id], results[row.id] = first_call(result), result
        if progress:
            progress(i + 1, len(rows))
    return Evaluation(score(predictions, rows), predictions, results, latencies)
