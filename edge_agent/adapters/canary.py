"""Pulled adapters go live only after a canary on this device: check, then activate or reject.

A release carries a small labelled canary set (validation requests the host held out).
Before it replaces the skill's current adapter the device replays, through its own backend
and the agent's own prompts and constrained decoding (a dry run: calls are validated, never
executed):

1. the canary set with the new adapter: exact call match (skills.home.score) must reach
   ``min_canary`` (default 0.5: a working adapter gets most of its set right, a broken one
   — another base, a damaged export, a bad build — next to none; a failure stops here);
2. the canary set with the current adapter: the new one may fall ``tolerance`` below it, no
   more;
3. the device's recent requests from the interaction log, new against current: the share
   that yields a call which parses and validates against the toolset (the valid-call rate)
   may fall ``tolerance``, no more. No logged requests: this check is skipped.

Fail any and the release is rejected (kept on disk with its reason, never retried); the last
known good adapter stays. ``check_for_updates`` is one round of that for every skill with a
newer release for this base model; it reports errors (a host that is down) and never raises
them, so an update never stops the device. An activated release whose centroids came from an
embedder this device lacks gets it fetched next (the router's distance signal); a failure
there is reported in the outcome and undoes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from edge_agent.adapters.installed import InstalledAdapters
from edge_agent.adapters.release import AdapterRelease, CanaryCall
from edge_agent.agent import Agent, AgentConfig
from edge_agent.backends.base import Backend
from edge_agent.errors import BackendError, EdgeAgentError
from edge_agent.policy import EffectRules, Policy
from edge_agent.prompt import system_prompt
from edge_agent.routing.embed import SPEC_FILE
from edge_agent.skills.home.evaluate import first_call
from edge_agent.skills.home.score import call_matches
from edge_agent.tools import Toolset, get_toolset
from edge_agent.types import Interaction, Message, ToolCall

if TYPE_CHECKING:
    from edge_agent.logstore import LogStore
    from edge_agent.models.gguf import BaseModelIdentity
    from edge_agent.settings import Settings

log = logging.getLogger(__name__)


class AdapterHost(Protocol):
    """What the canary and the updater need of the device (`edge_agent.runtime.Runtime`): its
    settings, its backend, and the adapter each skill runs."""

    settings: Settings
    backend: Backend

    def pinned_backend(self, adapter: str | None) -> Backend: ...
    def adapter_of(self, skill: str) -> str | None: ...
    def load_adapter(self, name: str, path: Path) -> None: ...
    def swap_adapter(self, skill: str, adapter: str | Path | None) -> str | None: ...
    def log(self) -> LogStore | None: ...


# A dry run: every call is proposed and validated, then denied, so nothing is executed.
_DRY_RUN = Policy(
    require_grounding=False,
    effects=EffectRules(read_only="deny", actuating="deny", dangerous="deny"),
)
_ONE_STEP = AgentConfig(max_steps=1, repair_attempts=0, stop_after_call=True)


class AdapterSource(Protocol):
    """Where releases come from: ``edge_agent.adapters.updater.AdapterUpdater`` (TUF), or a
    local stand-in in tests. ``download`` returns a verified file or raises AdapterError /
    HostUnreachableError."""

    def refresh(self) -> list[AdapterRelease]: ...

    def latest(self, skill: str) -> AdapterRelease | None: ...

    def download(self, release: AdapterRelease) -> Path: ...

    # Optional: ``download_embedder(name) -> Path``, a verified embedder folder (TUF has it).


@dataclass(frozen=True)
class Rate:
    hits: int
    n: int

    @property
    def value(self) -> float:
        return self.hits / self.n if self.n else 0.0

    def __str__(self) -> str:
        return f"{self.hits}/{self.n} ({self.value:.0%})"


@dataclass(frozen=True)
class Request:
    """One request as the model sees it: the words and the device's context block."""

    text: str
    context: str | None = None


@dataclass(frozen=True)
class CanaryRules:
    min_canary: float = 0.5  # exact match the new adapter must reach on its own canary set
    tolerance: float = 0.02  # how far below the current adapter it may fall
    recent_limit: int = 32  # recent requests replayed from the log, per skill

    @classmethod
    def from_settings(cls, settings: Any) -> CanaryRules:
        return cls(settings.adapters_canary_min, settings.adapters_canary_tolerance)


@dataclass
class CanaryReport:
    """Both numbers, new against current, and the verdict. ``None``: not measured (the
    check before it failed, or there was nothing to measure)."""

    skill: str
    candidate: str
    incumbent: str | None
    canary_new: Rate
    canary_old: Rate | None = None
    recent_new: Rate | None = None
    recent_old: Rate | None = None
    passed: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # a Rate becomes {"hits": …, "n": …}


def propose(
    backend_for: Callable[[str | None], Backend],
    toolset: Toolset,
    adapter: str | None,
    request: Request,
) -> ToolCall | None:
    """What the device's agent calls for ``request`` with ``adapter`` (a dry run): its first
    call, already validated against the toolset; None when it made no valid call, or could
    not run (e.g. the bare base model's long tool-list prompt overflows a small context)."""
    agent = Agent(
        backend_for(adapter),
        toolset,
        policy=_DRY_RUN,
        config=_ONE_STEP,
        context=lambda _text, _area: request.context,
        adapter=adapter,
    )
    try:
        return first_call(agent.run(request.text))
    except BackendError as exc:
        log.debug("canary request failed with adapter %s: %s", adapter, exc)
        return None


def run_canary(
    runtime: AdapterHost,
    release: AdapterRelease,
    candidate: str,
    *,
    recent: Sequence[Request] = (),
    rules: CanaryRules | None = None,
) -> CanaryReport:
    """Check ``candidate`` (loaded into ``runtime`` already) against the skill's current
    adapter; see the module docstring for the rules."""
    rules = rules or CanaryRules()
    toolset = get_toolset(release.skill)
    incumbent = runtime.adapter_of(release.skill)
    new = _exact(runtime, toolset, candidate, release.canary)
    report = CanaryReport(release.skill, candidate, incumbent, new)
    if not release.canary or new.value < rules.min_canary:
        return _verdict(report, rules)  # no need to measure the current adapter
    report.canary_old = _exact(runtime, toolset, incumbent, release.canary)
    if recent:
        report.recent_new = _valid(runtime, toolset, candidate, recent)
        report.recent_old = _valid(runtime, toolset, incumbent, recent)
    return _verdict(report, rules)


def _exact(
    runtime: AdapterHost, toolset: Toolset, adapter: str | None, calls: Sequence[CanaryCall]
) -> Rate:
    hits = 0
    for c in calls:
        call = propose(runtime.pinned_backend, toolset, adapter, Request(c.text, c.context))
        hits += call_matches(c.arguments, c.name, call)
    return Rate(hits, len(calls))


def _valid(
    runtime: AdapterHost, toolset: Toolset, adapter: str | None, requests: Sequence[Request]
) -> Rate:
    made = [propose(runtime.pinned_backend, toolset, adapter, r) for r in requests]
    return Rate(sum(call is not None for call in made), len(requests))


def _verdict(report: CanaryReport, rules: CanaryRules) -> CanaryReport:
    problems = _problems(report, rules)
    report.passed = not problems
    report.reason = "; ".join(problems) if problems else _summary(report)
    return report


def _problems(report: CanaryReport, rules: CanaryRules) -> list[str]:
    new, old = report.canary_new, report.canary_old
    if new.n == 0:
        return ["the release carries no canary set, so this device cannot check it"]
    if new.value < rules.min_canary:
        return [f"canary exact match {new} is under the {rules.min_canary:.0%} required"]
    problems = []
    if old is not None and new.value < old.value - rules.tolerance:
        problems.append(f"canary exact match fell from {old} to {new}")
    recent_new, recent_old = report.recent_new, report.recent_old
    if recent_new and recent_old and recent_new.value < recent_old.value - rules.tolerance:
        problems.append(
            f"valid calls on {recent_new.n} recent requests fell from {recent_old} to {recent_new}"
        )
    return problems


def _summary(report: CanaryReport) -> str:
    text = f"canary exact {report.canary_new} (current: {report.canary_old})"
    if report.recent_new is None:
        return text + "; no recent requests logged"
    return (
        text
        + f"; valid calls on recent requests {report.recent_new} (current: {report.recent_old})"
    )


# --- recent requests from the log ------------------------------------------------------------


def recent_requests(store: LogStore | None, toolset: Toolset, limit: int) -> list[Request]:
    """Up to ``limit`` distinct recent requests the agent served with ``toolset``, newest
    first, each with the context block it was asked with; [] without a readable log."""
    if store is None or limit <= 0:
        return []
    from edge_agent.logstore.seal import SealError

    system = {system_prompt(toolset, adapted=adapted) for adapted in (True, False)}
    found: dict[Request, None] = {}
    try:
        rows = store.rows(limit=limit * 4, newest=True)  # other skills share the log
    except EdgeAgentError as exc:
        log.warning("recent requests not read: %s", exc)
        return []
    for row in reversed(rows):
        with contextlib.suppress(SealError):
            request = _request_of(store.decode(row), system)
            if request is not None and len(found) < limit:
                found[request] = None
    return list(found)


def _request_of(interaction: Interaction, system: set[str]) -> Request | None:
    messages: list[Message] = interaction.messages
    if len(messages) < 2 or messages[0].content not in system or messages[1].role != "user":
        return None
    text, content = interaction.result.request, messages[1].content
    if not text.strip():
        return None
    context = content[len(text) + 2 :] if content.startswith(text + "\n\n") else None
    return Request(text, context or None)


# --- the update round ------------------------------------------------------------------------


@dataclass
class UpdateOutcome:
    skill: str
    release: str
    version: int
    action: Literal["activated", "rejected", "failed"] = "failed"
    reason: str = ""
    canary: CanaryReport | None = None
    error: EdgeAgentError | None = field(default=None, repr=False)  # the CLI's exit code
    embedder: str | None = None  # what became of the release's embedder, after activation

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("canary", "error")}
        return out | {"canary": self.canary.to_dict() if self.canary else None}


@dataclass
class UpdateReport:
    outcomes: list[UpdateOutcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # releases not tried, and why
    error: EdgeAgentError | None = None  # the host could not be asked at all
    embedders: list[str] = field(default_factory=list)  # retried for adapters active already

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcomes": [o.to_dict() for o in self.outcomes],
            "skipped": self.skipped,
            "error": str(self.error) if self.error else None,
            "embedders": self.embedders,
        }

    def lines(self) -> list[str]:
        out = [f"{o.release}: {o.action}: {o.reason}" for o in self.outcomes]
        out += [f"{o.release}: embedder {o.embedder}" for o in self.outcomes if o.embedder]
        out += [f"embedder {line}" for line in self.embedders]
        return out + ([f"host: {self.error}"] if self.error else [])


def check_for_updates(
    source: AdapterSource,
    installed: InstalledAdapters,
    runtime: AdapterHost,
    *,
    skills: Iterable[str] | None = None,
    rules: CanaryRules | None = None,
    recent: Sequence[Request] | None = None,
) -> UpdateReport:
    """One update round: for each skill (``skills``: only those) with a release newer than
    anything installed, for this base model: download → install → canary → activate, or
    reject. ``recent``: the requests to replay (default: read from the runtime's log)."""
    report = UpdateReport()
    try:
        releases = source.refresh()
    except EdgeAgentError as exc:
        report.error = exc
        return report
    wanted = set(skills) if skills is not None else None
    identity = runtime.backend.identity
    for release in _newer(releases, identity, installed, wanted, report.skipped):
        outcome = _update(
            source, installed, runtime, release, rules=rules or CanaryRules(), recent=recent
        )
        if outcome.action == "activated":
            outcome.embedder = fetch_embedder(source, release, runtime.settings.embedders_dir)
        report.outcomes.append(outcome)
    done = {o.release for o in report.outcomes}
    folder = runtime.settings.embedders_dir
    report.embedders = _retry_embedders(source, installed, folder, wanted, done)
    return report


def _retry_embedders(
    source: object,
    installed: InstalledAdapters,
    folder: Path,
    skills: set[str] | None,
    done: set[str],
) -> list[str]:
    """An active adapter whose embedder an earlier round failed to fetch gets another try."""
    lines = []
    for entry in installed.listing():
        name = entry.release.embedder
        wanted = skills is None or entry.skill in skills
        if entry.status != "active" or not wanted or entry.name in done:
            continue
        if name and entry.release.centroids and not _has_embedder(folder, name):
            lines.append(fetch_embedder(source, entry.release, folder) or "")
    return [line for line in lines if line]


def _has_embedder(folder: Path, name: str) -> bool:
    return (folder / name / SPEC_FILE).is_file()


def fetch_embedder(source: object, release: AdapterRelease, folder: Path) -> str | None:
    """Fetch the embedder `release`'s centroids came from into `folder` if it is not there;
    what happened, as a line (None: the release has no centroids). Never raises."""
    name = release.embedder
    if not name or not release.centroids:
        return None
    if _has_embedder(folder, name):
        return f"{name}: already on this device"
    download = getattr(source, "download_embedder", None)
    if not callable(download):
        return f"{name}: not fetched: this adapter source cannot fetch embedders"
    try:
        download(name)
    except EdgeAgentError as exc:  # the adapter stays active; the distance signal waits
        log.warning("embedder %s not fetched: %s", name, exc)
        return f"{name}: not fetched ({exc}); the next update round tries again"
    return f"{name}: fetched"


def _newer(
    releases: Sequence[AdapterRelease],
    identity: BaseModelIdentity | None,
    installed: InstalledAdapters,
    skills: set[str] | None,
    skipped: list[str],
) -> list[AdapterRelease]:
    """The newest release per skill for this base, when newer than all installed ones
    (a rejected version is never retried)."""
    ours = identity.as_dict() if identity is not None else None
    newest: dict[str, AdapterRelease] = {}
    for r in releases:
        if skills is not None and r.skill not in skills:
            continue
        if r.base_identity != ours:
            skipped.append(f"{r.name}: made for another base model")
        elif r.skill not in newest or r.version > newest[r.skill].version:
            newest[r.skill] = r
    pending = []
    for skill, release in sorted(newest.items()):
        seen = max((a.release.version for a in installed.history(skill)), default=0)
        if release.version > seen:
            pending.append(release)
        else:
            skipped.append(f"{release.name}: nothing newer than what is installed")
    return pending


def _update(
    source: AdapterSource,
    installed: InstalledAdapters,
    runtime: AdapterHost,
    release: AdapterRelease,
    *,
    rules: CanaryRules,
    recent: Sequence[Request] | None,
) -> UpdateOutcome:
    outcome = UpdateOutcome(release.skill, release.name, release.version)
    try:
        entry = installed.install(release, source.download(release))
    except EdgeAgentError as exc:  # not installed: a later round tries again
        outcome.reason, outcome.error = str(exc), exc
        return outcome
    try:
        runtime.load_adapter(entry.name, installed.verified_path(entry))
        if recent is None:
            toolset = get_toolset(release.skill)
            recent = recent_requests(_log_of(runtime), toolset, rules.recent_limit)
        outcome.canary = run_canary(runtime, release, entry.name, recent=recent, rules=rules)
    except EdgeAgentError as exc:  # e.g. llama.cpp refused the file: never retried
        outcome.action, outcome.reason, outcome.error = "rejected", str(exc), exc
        installed.reject(entry.name, str(exc))
        return outcome
    return _settle(installed, runtime, outcome, outcome.canary)


def _settle(
    installed: InstalledAdapters, runtime: AdapterHost, outcome: UpdateOutcome, canary: CanaryReport
) -> UpdateOutcome:
    """Activate a release that passed (state first, then the live backend), else reject it."""
    outcome.reason = canary.reason
    if not canary.passed:
        installed.reject(canary.candidate, canary.reason, canary=canary.to_dict())
        outcome.action = "rejected"
        return outcome
    installed.activate(canary.candidate, canary=canary.to_dict())
    try:
        runtime.swap_adapter(canary.skill, canary.candidate)
    except EdgeAgentError as exc:
        installed.reject(canary.candidate, f"could not be swapped in: {exc}")
        outcome.action, outcome.reason, outcome.error = "rejected", str(exc), exc
        return outcome
    outcome.action = "activated"
    return outcome


def _log_of(runtime: AdapterHost) -> LogStore | None:
    try:
        return runtime.log()
    except EdgeAgentError as exc:  # e.g. the log's key is not available to this process
        log.warning("the interaction log cannot be read (%s): no recent-request check", exc)
        return None


# --- the enrolled host, and the sync loop ----------------------------------------------------


def open_source(settings: Any, identity: BaseModelIdentity | None) -> AdapterSource:
    """The enrolled host's signed adapter repository (TUF), trusted from the root it gave
    at enrollment, over the pinned certificate."""
    from edge_agent.adapters.updater import AdapterUpdater
    from edge_agent.sync.enrollment import Enrollment

    enrollment = Enrollment.load(settings.enrollment_path)
    if settings.sync_host_url:
        enrollment = dataclasses.replace(enrollment, host_url=settings.sync_host_url)
    folder = settings.adapters_dir / "tuf"
    timeout = settings.sync_timeout_s
    return AdapterUpdater.from_enrollment(
        enrollment, folder, identity=identity, timeout_s=timeout,
        embedders_dir=settings.embedders_dir,
    )  # fmt: skip


def update_from_host(runtime: AdapterHost, skills: Iterable[str] | None = None) -> UpdateReport:
    """One update round against the enrolled host; a host that cannot be reached, or a
    device not enrolled, is the report's ``error``, never an exception."""
    settings = runtime.settings
    try:
        source = open_source(settings, runtime.backend.identity)
    except EdgeAgentError as exc:
        return UpdateReport(error=exc)
    try:
        installed = InstalledAdapters(settings.adapters_dir)
        rules = CanaryRules.from_settings(settings)
        return check_for_updates(source, installed, runtime, skills=skills, rules=rules)
    finally:
        close_source(source)


def close_source(source: AdapterSource) -> None:
    """Close a source that holds a connection (the TUF updater does)."""
    close = getattr(source, "close", None)
    if callable(close):
        close()


def adapter_tasks(runtime: AdapterHost) -> list[Callable[[object], object]]:
    """The sync loop's adapter round (``SyncWorker(tasks=...)``), when adapters_auto_update
    is on: it runs after each push; what it did goes to the log."""
    if not runtime.settings.adapters_auto_update:
        return []

    def pull(_client: object) -> UpdateReport:
        report = update_from_host(runtime)
        for line in report.lines():
            log.info("adapters: %s", line)
        return report

    return [pull]
