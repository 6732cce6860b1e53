"""What the API fuzz tests (tests/server/test_fuzz_api.py, tests/host/test_fuzz_api.py) share
with their benchmark (scripts/bench/fuzz_api.py): the budget, and a tally of cases and failures.

In CI a case that fails raises, so Hypothesis shrinks it and pytest shows the smallest request
that breaks the server. The benchmark sets ``BUDGET.collect``: every failure is recorded and the
run goes on, so it can say how many of its cases failed and how."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by the tests only: pytest must load its plugins before they are
    from hypothesis import settings
    from hypothesis.strategies import SearchStrategy
    from schemathesis import Case


@dataclass
class Budget:
    # Hypothesis cases per operation (positive and negative data together) in the fuzzing
    # phase; the coverage phase adds its own fixed set of edge cases. CI: both suites in ~20 s.
    examples: int = 50
    collect: bool = False  # the benchmark: record failures and go on


@dataclass
class Tally:
    """Per suite and operation (``"headers: POST /v1/enroll"``): cases, statuses, failures."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: defaultdict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    failures: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


BUDGET = Budget()
TALLY = Tally()


def fuzz_settings() -> settings:
    """Hypothesis settings for a fuzz test: the budget, no deadline (the first request builds
    the agent), and no health check that would fail a slow strategy rather than the server."""
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=BUDGET.examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,  # no .hypothesis/ folder: a failure prints the request that reproduces it
    )


def header_values() -> SearchStrategy[str]:
    """Header values as a client can send them: latin-1 (a server sees bytes, Starlette decodes
    them so), no control characters, no surrounding space."""
    from hypothesis import strategies as st

    chars = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
    return st.text(chars).map(str.strip)


def half(good: SearchStrategy[Any], bad: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """Good or bad, one each in two: a bad header stops a request before what follows it."""
    from hypothesis import strategies as st

    return st.booleans().flatmap(lambda ok: good if ok else bad)


def tallied(suite: str, case: Case, headers: Mapping[str, Any], run: Callable[[], Any]) -> None:
    """Run one case (``run`` sends it, checks the answer and returns it), counted under its
    suite and operation."""
    key = f"{suite}: {case.operation.label}"
    TALLY.cases[key] += 1
    try:
        response = run()
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis' failures come as a group
        if not BUDGET.collect:
            raise
        TALLY.failures[key].append(describe(case, headers, exc))
    else:
        TALLY.statuses[key][response.status_code] += 1


def describe(case: Case, headers: Mapping[str, Any], exc: BaseException) -> str:
    """A failure in a few lines: what went wrong, then the request that reproduces it."""
    lines = [line for line in str(exc).splitlines() if line.strip()][:6]
    reason = "\n    ".join([f"{type(exc).__name__}: {lines[0] if lines else ''}", *lines[1:]])
    return f"{reason}\n    {case.as_curl_command(headers=dict(headers))}"
