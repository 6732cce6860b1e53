"""Late teacher labels: turns served locally while the remote model was down get the teacher's
call once it answers again, and so do the confident local turns drawn for an audit
(``routing.audit``: ``route`` "local", ``routing.audit_share`` set).

    sealed log ─► turns marked ``routing.queued`` (local fallbacks of skills that opt in,
        audited local turns of skills not local-only now), younger than ``max_age_s``,
        without a label yet, oldest first ─► at most ``limit`` per round
        ─► the router's RemoteClient (anonymized, behind its circuit breaker)
        ─► the teacher's call, validated, never executed
        ─► a NEW record: route "escalated", ``label_of`` = the turn's id, the call with
           status "delegated", the turn's request and prompt, its local call as the
           local attempt (an audit's label also carries the turn's signals and share)

Nothing runs: the turn was served long ago and the label is training data. "delegated" says
the call was made but not executed here; the default labeler (``skills.skill.labeled_turn``)
keeps such an escalated record as a teacher row, and drops the original (local_fallback); an
audited original stays a device row, which the host's curation lets the teacher's overrule.
Which turns are labelled lives in the log itself (a label names its turn), so a round after
a restart, or from another process (`edge-agent route label`), never labels a turn twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edge_agent import prompt
from edge_agent.errors import (
    ConfigError,
    EdgeAgentError,
    RemoteAuthError,
    RemoteModelError,
    RemoteResponseError,
    RemoteUnavailableError,
    ToolError,
)
from edge_agent.tools import Toolset
from edge_agent.types import (
    AgentResult,
    Interaction,
    LocalAttempt,
    Message,
    Routing,
    ToolOutcome,
)

if TYPE_CHECKING:
    from edge_agent.logstore import LogStore
    from edge_agent.routing.remote import RemoteClient, RemoteReply
    from edge_agent.routing.router import Router
    from edge_agent.settings import Settings
    from edge_agent.skills.skill import Skill

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 20  # teacher requests per round
DEFAULT_MAX_AGE_S = 7 * 86_400.0  # older turns are left unlabelled
MAX_TRIES = 3  # unusable answers for one turn before a queue stops asking about it

# The tools a queued turn ran with, as this device has them now; None: it cannot be labelled.
ToolsetFor = Callable[[Interaction], Toolset | None]
OptedIn = Callable[[str | None], bool]  # by skill name: may its queued turns be labelled


@dataclass
class LabelReport:
    """One round: how many turns waited for a label, what came of them."""

    waiting: int = 0  # queued, opted in, young enough, unlabelled, at the start of the round
    labelled: int = 0
    failed: int = 0  # the teacher's answer was unusable (asked again next round, a few times)
    skipped: int = 0  # no tools for the turn's skill here, or given up after MAX_TRIES
    teacher_bytes: int = 0
    stopped: str | None = None  # why the round ended early (the remote is down, a bad key)

    @property
    def remaining(self) -> int:
        return self.waiting - self.labelled

    def as_dict(self) -> dict[str, Any]:
        return {
            "waiting": self.waiting, "labelled": self.labelled, "failed": self.failed,
            "skipped": self.skipped, "remaining": self.remaining,
            "teacher_bytes": self.teacher_bytes, "stopped": self.stopped,
        }  # fmt: skip


class LabelQueue:
    """Labels queued turns in bounded rounds; keep one per process (it remembers turns whose
    answers were unusable, so they cannot block the head of the queue)."""

    def __init__(
        self,
        log: LogStore,
        remote: RemoteClient | None,
        toolset_for: ToolsetFor,
        *,
        opted_in: OptedIn = lambda _skill: True,
        audits: OptedIn = lambda _skill: True,
        limit: int = DEFAULT_LIMIT,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log = log
        self.remote = remote
        self.toolset_for = toolset_for
        self.opted_in = opted_in
        self.audits = audits
        self.limit = limit
        self.max_age_s = max_age_s
        self.clock = clock
        self._failures: dict[str, int] = {}
        self._opened_local: set[str] = set()  # local rows read once: most are no audit
        self._audited: dict[str, Interaction] = {}  # audited turns found, not yet labelled

    def pending(self) -> list[Interaction]:
        """Queued turns still waiting for a label, oldest first. Only the rows that can
        matter are opened: local fallbacks, local turns this queue has not read yet (for
        audits), then (if any is queued) escalated rows from the oldest queued turn on,
        where its label would be."""
        rows = self.log.rows(since=self.clock() - self.max_age_s)
        queued = [
            item for item in self._opened(rows, "local_fallback")
            if _queued(item) and self.opted_in(item.result.skill)
        ]  # fmt: skip
        queued = sorted(queued + self._audits(rows), key=lambda item: item.recorded_at)
        if not queued:
            return []
        later = [row for row in rows if row["ts"] >= queued[0].recorded_at]
        labelled = {item.result.label_of for item in self._opened(later, "escalated")}
        self._audited = {k: v for k, v in self._audited.items() if k not in labelled}
        return [item for item in queued if item.id not in labelled]

    def _audits(self, rows: list[dict[str, Any]]) -> list[Interaction]:
        """Audited local turns in the window; each local row is decrypted once per queue."""
        window = {row["id"] for row in rows}
        self._opened_local &= window
        self._audited = {k: v for k, v in self._audited.items() if k in window}
        fresh = [row for row in rows if row["id"] not in self._opened_local]
        for item in self._opened(fresh, "local"):
            if _queued(item) and self.audits(item.result.skill):
                self._audited[item.id] = item
        self._opened_local |= {row["id"] for row in fresh if row["route"] == "local"}
        return list(self._audited.values())

    def round(self) -> LabelReport:
        """Ask the teacher about up to ``limit`` queued turns; stops at the first sign that
        the remote is down or refuses this device (the rest wait for the next round)."""
        todo = self.pending()
        report = LabelReport(waiting=len(todo))
        if self.remote is None:
            report.stopped = "no remote model (none configured, or offline)" if todo else None
            return report
        asked = 0
        for item in todo:
            if asked >= self.limit:
                break
            toolset = self.toolset_for(item)
            if toolset is None or self._failures.get(item.id, 0) >= MAX_TRIES:
                report.skipped += 1
                continue
            asked += 1
            if not self._label(self.remote, item, toolset, report):
                break
        return report

    def _label(
        self, remote: RemoteClient, item: Interaction, toolset: Toolset, report: LabelReport
    ) -> bool:
        """One turn; False when the round should stop."""
        messages = prompt_of(item)
        try:
            reply = remote.ask(messages, toolset, 256, instructions_of(item, toolset))
            report.teacher_bytes += reply.request_bytes
            result = label_record(item, reply, toolset, remote.model)
        except (RemoteUnavailableError, RemoteAuthError, RemoteModelError) as exc:
            report.stopped = str(exc)
            return False
        except (RemoteResponseError, ToolError) as exc:
            logger.info("no usable teacher label for %s: %s", item.id, exc)
            self._failures[item.id] = self._failures.get(item.id, 0) + 1
            report.failed += 1
            return True
        self.log.record(result, messages, toolset.schemas())
        report.labelled += 1
        return True

    def _opened(self, rows: list[dict[str, Any]], route: str) -> Iterator[Interaction]:
        for row in rows:
            if row["route"] != route:
                continue
            try:
                yield self.log.decode(row)
            except EdgeAgentError:  # shredded or damaged: `edge-agent log verify` reports it
                continue


def _queued(item: Interaction) -> bool:
    routing = item.result.routing
    served_here = item.result.route in ("local_fallback", "local")
    return served_here and routing is not None and routing.queued


def prompt_of(item: Interaction) -> list[Message]:
    """What the local model was shown of the turn: the conversation before the request, the
    request with the device's context, and the calls a client ran since with their results;
    the teacher gets the same turn, not what the local call led to."""
    from edge_agent.routing.router import request_index

    messages = item.messages
    at = request_index(messages, item.result.request)
    if at is None:
        return [Message(role="user", content=item.result.request)]
    return list(messages[: at + 1 + 2 * item.result.prior_calls])  # a call and its result each


def instructions_of(item: Interaction, toolset: Toolset) -> str:
    """The client's instructions the turn was prompted with: what the logged system prompt
    holds before the device's own (the remote replaces the device's). None in an adapter's
    prompt, nor where the toolset's prompt has changed since (then the teacher goes without)."""
    first = item.messages[0] if item.messages else None
    system = first.content if first is not None and first.role == "system" else ""
    own = "\n\n" + prompt.system_prompt(toolset)
    return system[: -len(own)] if system.endswith(own) else ""


def label_record(
    item: Interaction, reply: RemoteReply, toolset: Toolset, model: str
) -> AgentResult:
    """The teacher's answer to a queued turn as a record of its own. Raises ToolError when
    the answer is not a valid call of `toolset` (nor an answer in words)."""
    parsed = prompt.parse_output(reply.text)
    calls, answer = [], ""
    if isinstance(parsed, str):
        answer = parsed
    else:
        tool = toolset.get(parsed.name)
        parsed.arguments = tool.validate(parsed.arguments)
        effect = tool.effect_of(parsed.arguments)
        calls = [ToolOutcome(call=parsed, effect=effect, status="delegated")]
    turn = item.result
    routing = Routing(
        decision="remote", reason=_why_labelled(turn), remote_model=model,
        local_attempt=_as_attempt(turn), remote_usage=reply.usage,
        remote_bytes=reply.request_bytes, remote_ms=reply.latency_ms,
    )  # fmt: skip
    if turn.routing is not None and turn.routing.audit_share is not None:
        # self-contained: calibration reads the pair from the label alone (the host too)
        routing.signals, routing.audit_share = turn.routing.signals, turn.routing.audit_share
    return AgentResult(
        request=turn.request, answer=answer, tool_calls=calls, model=model, skill=turn.skill,
        toolset=toolset.fingerprint, route="escalated", steps=1, latency_ms=reply.latency_ms,
        usage=reply.usage, routing=routing, label_of=turn.id, prior_calls=turn.prior_calls,
    )  # fmt: skip


def _why_labelled(turn: AgentResult) -> str:
    if turn.routing is not None and turn.routing.audit_share is not None:
        return f"audit: teacher label for {turn.id}, served locally with confidence"
    return f"teacher label for {turn.id}, served while the remote was down"


def _as_attempt(turn: AgentResult) -> LocalAttempt:
    """The local model's part of a turn it served (its first call ran), beside the label."""
    first = turn.tool_calls[0].call if turn.tool_calls else None
    return LocalAttempt(
        model=turn.model, adapter=turn.adapter, call=first, answer=turn.answer or None,
        error=turn.error, latency_ms=turn.latency_ms, usage=turn.usage,
    )  # fmt: skip


# --- the queue of a running device ----------------------------------------------------------


class LabelSource(Protocol):
    """What the label round needs of a device (``runtime.Runtime`` has all of it)."""

    @property
    def router(self) -> Router | None: ...

    def log(self) -> LogStore | None: ...

    def skill(self, name: str) -> Skill: ...

    def toolset(self, name: str) -> Toolset: ...


class SkillTools:
    """A queued turn's tools: the skill's toolset if its schemas are still the ones the turn
    saw, else those schemas as the log kept them (tools that validate but cannot run),
    else the skill's toolset as it is now."""

    def __init__(self, log: LogStore, toolset: Callable[[str], Toolset]) -> None:
        self.log = log
        self.toolset = toolset

    def __call__(self, item: Interaction) -> Toolset | None:
        name, fingerprint = item.result.skill, item.result.toolset
        if name is None:
            return None
        current = self._current(name)
        if current is not None and current.fingerprint == fingerprint:
            return current
        logged = self.log.toolset_schemas(fingerprint) if fingerprint else None
        return Toolset.from_schemas(name, logged) if logged else current

    def _current(self, name: str) -> Toolset | None:
        try:
            return self.toolset(name)
        except EdgeAgentError as exc:  # a client's tools, an MCP server that is down
            logger.debug("no toolset for skill %s here: %s", name, exc)
            return None


def skill_opted_in(skill: Callable[[str], Skill]) -> OptedIn:
    """A skill's current opt-in (``teacher_labels_offline``); a client's unnamed tools,
    which no registry knows, keep the default (in)."""

    def opted_in(name: str | None) -> bool:
        if name is None:
            return False
        try:
            return skill(name).teacher_labels_offline
        except ConfigError:
            return True

    return opted_in


def skill_audited(skill: Callable[[str], Skill]) -> OptedIn:
    """Whether an audited turn of a skill may still go to the teacher: not once the skill is
    ``local-only`` (it may have become so since); a client's unnamed tools may."""

    def audited(name: str | None) -> bool:
        if name is None:
            return False
        try:
            return skill(name).route != "local-only"
        except ConfigError:
            return True

    return audited


def label_queue(
    source: LabelSource, *, limit: int = DEFAULT_LIMIT, max_age_s: float = DEFAULT_MAX_AGE_S
) -> LabelQueue | None:
    """The queue of a running device (`serve` calls ``round()`` each sync round), or None
    without a log or a remote model."""
    log, router = source.log(), source.router
    if log is None or router is None:
        return None
    return LabelQueue(
        log, router.remote, SkillTools(log, source.toolset), opted_in=skill_opted_in(source.skill),
        audits=skill_audited(source.skill), limit=limit, max_age_s=max_age_s,
    )  # fmt: skip


def label_queued(
    source: LabelSource, *, limit: int = DEFAULT_LIMIT, max_age_s: float = DEFAULT_MAX_AGE_S
) -> LabelReport:
    """One round with a fresh queue (`edge-agent route label`); without a remote model it
    only counts what waits."""
    log = source.log()
    if log is None:
        return LabelReport(stopped="no interaction log on this device")
    queue = label_queue(source, limit=limit, max_age_s=max_age_s)
    if queue is None:
        queue = LabelQueue(log, None, SkillTools(log, source.toolset),
                           opted_in=skill_opted_in(source.skill),
                           audits=skill_audited(source.skill), max_age_s=max_age_s)  # fmt: skip
    return queue.round()


class SettingsSource:
    """A `LabelSource` from settings alone: the log, the router and the skills' toolsets,
    without loading the local model (`edge-agent route label`). Close it."""

    def __init__(self, settings: Settings, log: LogStore) -> None:
        from edge_agent.routing.router import open_router
        from edge_agent.skills import keep_words

        self.settings = settings
        self._log = log
        self.router = open_router(settings, keep=keep_words(settings))
        self._toolsets: dict[str, Toolset] = {}

    def log(self) -> LogStore | None:
        return self._log

    def skill(self, name: str) -> Skill:
        from edge_agent.skills.registry import get_skill

        return get_skill(name, self.settings)

    def toolset(self, name: str) -> Toolset:
        if name not in self._toolsets:
            self._toolsets[name] = self.skill(name).build_toolset(self.settings)
        return self._toolsets[name]

    def close(self) -> None:
        for toolset in self._toolsets.values():
            closer = getattr(toolset, "close", None)  # an MCP toolset ends its session
            if callable(closer):
                closer()
        if self.router is not None:
            self.router.close()
