"""The gate's measure for any skill: the device's own agent step over held-out teacher labels.

Each row runs as a device runs it: an `Agent` over the skill's toolset (rebuilt from the
logged schemas, so the host needs none of the skill's code), the request with the context
the device logged, one constrained generation through llama.cpp with the adapter (or the
bare base). The proposed call is held, never executed (``Turn.propose``), and scored against
the teacher's call with the skill's scorer. A turn that fails (no valid call) is wrong.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from edge_agent.agent import Agent, AgentConfig
from edge_agent.backends.base import Backend
from edge_agent.skills.skill import Scorer, exact_call
from edge_agent.tools import Toolset
from edge_agent.types import ToolCall

__all__ = ["ANSWER", "ScoreReport", "SkillEvaluation", "evaluate_skill", "run_rows"]

ANSWER = "(answer)"  # the per-tool bucket of rows whose label is an answer in words
CANDIDATE = "candidate"


class LabeledRow(Protocol):
    """What a row needs: `LabeledTurn` and the curated `Record` both have it."""

    @property
    def id(self) -> str: ...
    @property
    def request(self) -> str: ...
    @property
    def context(self) -> str | None: ...
    @property
    def call(self) -> ToolCall | None: ...


class ToolScore(BaseModel):
    n: int = 0
    right_tool: int = 0
    exact: int = 0


class RowResult(BaseModel):
    id: str
    tool: str  # the label's tool (ANSWER for a word answer)
    predicted: str | None  # the proposed tool; None for an answer or a failed turn
    right_tool: bool
    exact: bool
    failed: bool = False


class ScoreReport(BaseModel):
    """The gate's report shape (the names `gate.decide` reads), per tool of the labels."""

    n: int
    function_accuracy: float  # right tool
    exact_match: float  # the skill's scorer said yes
    no_call: int
    failed: int
    per_intent: dict[str, ToolScore] = Field(default_factory=dict)  # per labelled tool
    rows: list[RowResult] = Field(default_factory=list)


@dataclass
class SkillEvaluation:
    report: ScoreReport
    predictions: dict[str, ToolCall | None] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        r, ordered = self.report, sorted(self.latencies_ms)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0  # noqa: E731
        return {
            "n": r.n, "right_tool": r.function_accuracy, "exact": r.exact_match,
            "failed": r.failed, "p50_ms": pick(0.5), "p95_ms": pick(0.95),
            "mean_ms": statistics.fmean(ordered) if ordered else 0.0,
        }  # fmt: skip


def evaluate_skill(
    model_path: str | Path,
    adapter: Path | None,
    toolset: Toolset,
    rows: Sequence[LabeledRow],
    scorer: Scorer = exact_call,
    *,
    n_ctx: int = 4096,
    threads: int = 2,
) -> SkillEvaluation:
    """The device's runtime: llama.cpp, the GGUF base, the exported adapter (or none)."""
    from edge_agent.backends.llama_cpp import LlamaCppBackend

    with LlamaCppBackend(model_path, n_ctx=n_ctx, n_threads=threads) as backend:
        name = None
        if adapter is not None:
            name = CANDIDATE
            backend.load_adapter(name, adapter)
            backend.use_adapter(name)
        return run_rows(backend, toolset, rows, scorer, adapter=name)


class _LoggedContext:
    """The agent's context hook, answering with the context the device logged for the row."""

    def __init__(self) -> None:
        self.value: str | None = None

    def __call__(self, _text: str, _area: str | None) -> str | None:
        return self.value


def run_rows(
    backend: Backend,
    toolset: Toolset,
    rows: Sequence[LabeledRow],
    scorer: Scorer = exact_call,
    *,
    adapter: str | None = None,
) -> SkillEvaluation:
    """One proposed call per row on `backend`, scored; `adapter` names the loaded one (it
    picks the adapted prompt, as on the device)."""
    context = _LoggedContext()
    config = AgentConfig(max_steps=1, repair_attempts=0)  # as the home benchmark runs
    agent = Agent(backend, toolset, config=config, context=context, adapter=adapter)
    out = SkillEvaluation(ScoreReport(n=0, function_accuracy=0, exact_match=0, no_call=0,
                                      failed=0))  # fmt: skip
    results = []
    for row in rows:
        context.value = row.context
        turn = agent.turn(row.request)
        result = turn.propose()
        got = turn.held[0] if turn.held is not None else None
        failed = result.outcome in ("failed", "timeout")
        out.predictions[row.id] = got
        out.latencies_ms.append(result.timings.get("generate_ms", result.latency_ms))
        results.append(_row_result(row, got, failed, scorer))
    out.report = score_report(results)
    return out


def _row_result(row: LabeledRow, got: ToolCall | None, failed: bool, scorer: Scorer) -> RowResult:
    gold = row.call
    return RowResult(
        id=row.id, tool=gold.name if gold else ANSWER, predicted=got.name if got else None,
        right_tool=not failed and (got.name if got else None) == (gold.name if gold else None),
        exact=not failed and scorer(got, gold), failed=failed,
    )  # fmt: skip


def score_report(results: Sequence[RowResult]) -> ScoreReport:
    per_tool: dict[str, ToolScore] = {}
    for r in results:
        counts = per_tool.setdefault(r.tool, ToolScore())
        counts.n += 1
        counts.right_tool += r.right_tool
        counts.exact += r.exact
    n = len(results)
    return ScoreReport(
        n=n,
        function_accuracy=sum(r.right_tool for r in results) / n if n else 0.0,
        exact_match=sum(r.exact for r in results) / n if n else 0.0,
        no_call=sum(r.predicted is None and not r.failed for r in results),
        failed=sum(r.failed for r in results),
        per_intent=dict(sorted(per_tool.items())),
        rows=list(results),
    )
