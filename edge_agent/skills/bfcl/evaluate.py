"""Run a backend over BFCL rows as the device serves a client's tools, and score each call.

Each row is one request: the question, the row's one function as a one-tool toolset, the
device's prompt for it and output constrained to that toolset's call schema (plus a plain
answer with ``allow_answer``, as the OpenAI server does for ``tool_choice="auto"``). The
prompt is the generic one, which lists the tool (name, typed parameters, description): the
adapted prompt names only the toolset, and a BFCL function is new in every row.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_agent.backends.base import Backend, GenerationRequest
from edge_agent.errors import ToolArgumentsError
from edge_agent.prompt import messages_for, output_schema, parse_output
from edge_agent.skills.bfcl.dataset import Row
from edge_agent.skills.bfcl.score import Report, score
from edge_agent.types import ToolCall

MAX_TOKENS = 256  # the longest canonical answer in simple_python is 95 tokens


@dataclass
class Evaluation:
    report: Report
    predictions: dict[str, ToolCall | None]
    outputs: dict[str, str] = field(default_factory=dict)  # the raw text, for error reading
    latencies_ms: list[float] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)  # ids whose output was cut off

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms) or [0.0]
        return self.report.summary() | {
            "p50_ms": round(ordered[len(ordered) // 2], 1),
            "mean_ms": round(statistics.fmean(ordered), 1),
            "unparsed": len(self.unparsed),  # counted as no_call above
        }


def request_for(
    row: Row, *, adapted: bool = False, allow_answer: bool = False
) -> GenerationRequest:
    """The generation the device runs for this row (greedy, schema-constrained)."""
    toolset = row.toolset()
    return GenerationRequest(
        messages=messages_for(row.question, toolset, adapted=adapted),
        json_schema=output_schema(toolset, allow_answer=allow_answer),
        max_tokens=MAX_TOKENS,
    )


def predict(backend: Backend, request: GenerationRequest) -> tuple[ToolCall | str | None, str]:
    """The call, the plain answer, or None where the output is cut off (at max_tokens)."""
    text = backend.complete(request).text
    try:
        return parse_output(text), text
    except ToolArgumentsError:
        return None, text


def evaluate(
    backend: Backend,
    rows: Sequence[Row],
    *,
    adapted: bool = False,
    allow_answer: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """One constrained generation per row with whatever adapter the backend has active."""
    evaluation = Evaluation(Report(), {})
    for i, row in enumerate(rows):
        started = time.perf_counter()
        got, text = predict(backend, request_for(row, adapted=adapted, allow_answer=allow_answer))
        evaluation.latencies_ms.append((time.perf_counter() - started) * 1000)
        evaluation.predictions[row.id] = got if isinstance(got, ToolCall) else None
        evaluation.outputs[row.id] = text
        if got is None:
            evaluation.unparsed.append(row.id)
        if progress:
            progress(i + 1, len(rows))
    evaluation.report = score(rows, evaluation.predictions)
    return evaluation
