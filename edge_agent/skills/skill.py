"""The skill contract: a named unit of agent work the whole loop understands.

A skill is what the paper calls a task: the device runs it (its toolset and prompt), the log
files its turns under its name, the host trains and gates an adapter for it, and devices
pull that adapter for it alone. Built-in skills (``home``, ``system``, ``bfcl``), those a
package registers through the ``edge_agent.skills`` entry point group, those a config file
names (``[skills.NAME]``: a Python factory or an MCP server) and a client's own tools sent to
``serve`` all have this shape::

    Skill(
        name="thermostat",
        toolset=lambda settings: Toolset("thermostat", [set_temperature, read_sensor]),
        route="teacher-first",          # day 0: the large model answers, the SLM shadows it
    )

Scoring defaults to the exact call: same tool, same arguments after normalization (case,
spacing, 2 == 2.0). Training rows default to the call the turn ended with: the teacher's
label on an escalated turn, the device's own call when it ran and nobody complained.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_agent.settings import RouteMode
from edge_agent.tools import Toolset
from edge_agent.types import Interaction, ToolCall

if TYPE_CHECKING:
    from edge_agent.settings import Settings

__all__ = [
    "CalibrationRow",
    "LabeledTurn",
    "RouteMode",
    "Scorer",
    "Skill",
    "exact_call",
    "labeled_turn",
    "normalize_arguments",
    "request_key",
]

Scorer = Callable[[ToolCall | None, ToolCall | None], bool]
ToolsetFactory = Callable[["Settings"], Toolset]
_PUNCT = re.compile(r"[^\w\s]")


@dataclass(frozen=True)
class LabeledTurn:
    """One logged turn as training or evaluation data: the request, what the device added to
    it, and the call it should make (None: it should answer in words)."""

    id: str
    request: str
    context: str | None
    call: ToolCall | None
    teacher: bool  # the label came from the teacher (escalated), not the device's own call

    @property
    def key(self) -> str:
        """Turns with the same key are the same request: a split never separates them."""
        return request_key(self.request)


def request_key(text: str) -> str:
    """Near-duplicates are the same request: case, punctuation and spacing do not count."""
    return " ".join(_PUNCT.sub(" ", text.casefold()).split())


def exact_call(got: ToolCall | None, gold: ToolCall | None) -> bool:
    """The default scorer: both answer in words, or the same tool with the same arguments
    after normalization."""
    if got is None or gold is None:
        return got is None and gold is None
    return got.name == gold.name and normalize_arguments(got.arguments) == normalize_arguments(
        gold.arguments
    )


def normalize_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments as a scorer compares them: unset (None) left out, strings case- and
    space-folded, integral floats as integers, containers item by item."""
    return {k: _normal(v) for k, v in arguments.items() if v is not None}


def _normal(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.casefold().split())
    if isinstance(value, bool):
        return ("bool", value)  # True == 1 in Python; a boolean is not a number here
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return normalize_arguments(value)
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    return value


def labeled_turn(interaction: Interaction) -> LabeledTurn | None:
    """The default labeler. Kept: an escalated turn's teacher call or answer (distillation),
    a local call that ran here and was not voted down (a client's tools ran elsewhere: no
    evidence). Not a row: failures, denied or unconfirmed
    calls, best efforts that waited for a teacher, thumbs-down turns."""
    result = interaction.result
    if interaction.feedback is not None and interaction.feedback.rating == "down":
        return None
    if result.outcome != "answered" or result.route == "local_fallback" or result.prior_calls:
        return None
    first = result.tool_calls[0] if result.tool_calls else None
    if first is not None and first.status not in ("ok", "delegated"):
        return None
    if first is not None and first.status == "delegated" and result.route != "escalated":
        return None  # the client ran the SLM's own call: nothing says it was the right one
    if first is None and result.route != "escalated":
        return None  # a local answer in words is no evidence the words were right
    return LabeledTurn(
        id=result.id, request=result.request, context=context_of(interaction),
        call=first.call if first else None, teacher=result.route == "escalated",
    )  # fmt: skip


def context_of(interaction: Interaction) -> str | None:
    """What the device appended to the user's words in the prompt (the home's devices, the
    speaker's area; `prompt.user_content` puts it after a blank line), or None."""
    request = interaction.result.request
    user = next((m.content for m in interaction.messages if m.role == "user"), "")
    prefix = request + "\n\n"
    return user[len(prefix) :] if user.startswith(prefix) else None


@dataclass(frozen=True)
class CalibrationRow:
    """A request of a skill's own calibration set (home: the HA validation split): the router's
    thresholds are picked on the local model's attempts at such rows. ``tools`` builds the
    toolset the request runs in; ``right`` says whether a call is the right one."""

    id: str
    request: str
    tools: Callable[[], Toolset]
    right: Callable[[ToolCall | None], bool]
    area: str | None = None


@dataclass(frozen=True)
class Skill:
    """A named unit of work: how its tools are found and run, how a call is scored, how its
    logged turns become rows, and where its turns are served by default."""

    name: str
    toolset: ToolsetFactory | None  # None: its tools come with each request (a client's, BFCL's)
    description: str = ""
    route: RouteMode = "local-first"
    scorer: Scorer = exact_call
    labeler: Callable[[Interaction], LabeledTurn | None] = labeled_turn
    teacher_labels_offline: bool = True  # queue turns served locally while the link was down
    source: str = "builtin"  # builtin | entry point NAME | config | client
    # words what leaves the device must keep readable (the names of the home's devices): the
    # anonymizer would otherwise replace them and the teacher could not name the device
    keep: Callable[[Settings], set[str]] | None = None
    # its own labelled rows for `route calibrate` (the first N when given); None: calibrate
    # it from the log, on the teacher's answers beside the local attempts (--from-log)
    calibration_rows: Callable[[int | None], list[CalibrationRow]] | None = None
    # the most tokens one turn takes in the model's context (prompt, request, what the device
    # adds, the call), on its adapter (`adapted`) or the bare model; the fit plan sizes the
    # context to it. None, or a None answer: unknown, the profile's context stands
    context_bound: Callable[[Settings, bool], int | None] | None = None

    def build_toolset(self, settings: Settings) -> Toolset:
        from edge_agent.errors import ConfigError

        if self.toolset is None:
            raise ConfigError(f"skill {self.name!r} has no toolset of its own: its tools come "
                              "with each request")  # fmt: skip
        return self.toolset(settings)

    def context_tokens(self, settings: Settings, *, adapted: bool) -> int | None:
        """The most tokens one turn of this skill needs in context (None: not known)."""
        return self.context_bound(settings, adapted) if self.context_bound else None

    def score(self, got: ToolCall | None, gold: ToolCall | None) -> bool:
        return self.scorer(got, gold)

    def label(self, interaction: Interaction) -> LabeledTurn | None:
        return self.labeler(interaction)
