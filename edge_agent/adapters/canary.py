"""Pulled adapters go live only after a canary on this device: check, then activate or reject.

Each skill the device runs gets its own adapter, and each adapter its own canary. Before a
release replaces its skill's current adapter the device replays, through its own backend and
the agent's own prompts and constrained decoding (a dry run: calls are validated, never
executed), two sets, scored with the skill's own scorer (``Skill.score``):

1. the release's canary set (requests the host held out) with the new adapter: its score
   must reach ``min_canary`` (default 0.5: a working adapter gets most of its set right, a
   broken one — another base, a damaged export, a bad build — next to none; a failure stops
   here); then with the current adapter: the new one may fall ``tolerance`` below it, no more;
2. the recent turns of *that skill* from the device's log, labelled by the skill's labeler
   (the teacher's call on an escalated turn, a local call that ran and was not voted down),
   new against current: the score may fall ``tolerance``, no more. None logged: skipped.

The tools the calls are proposed with are the skill's own, or, when the device cannot build
them now, the schemas its logged turns saw (`edge_agent.adapters.subject`). Fail a check and
the release is rejected (kept on disk with its reason, never retried); the last known good
adapter stays. A release the device cannot check now (no tools and no logged schemas) is
not installed and is tried again next round.

``check_for_updates`` is one round of that for every skill this device runs
(``device_skills``: `tools` and every ``[skills.NAME]``) with a newer release for its base
model; a release for a skill it does not run is skipped with the reason, and taken by the
first round after the skill is configured. It reports errors (a host that is down) and never
raises them, so an update never stops the device. An activated release whose centroids came
from an embedder this device lacks gets it fetched next (the router's distance signal); a
failure there is reported in the outcome and undoes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from edge_agent.adapters.installed import InstalledAdapters
from edge_agent.adapters.release import AdapterRelease
from edge_agent.adapters.subject import CanarySubject, SkillHost, canary_subject
from edge_agent.agent import Agent, AgentConfig
from edge_agent.backends.base import Backend
from edge_agent.errors import BackendError, EdgeAgentError
from edge_agent.policy import EffectRules, Policy
from edge_agent.routing.embed import SPEC_FILE
from edge_agent.skills.registry import device_skills
from edge_agent.tools import Toolset
from edge_agent.types import ToolCall

if TYPE_CHECKING:
    from edge_agent.models.gguf import BaseModelIdentity

log = logging.getLogger(__name__)


class AdapterHost(SkillHost, Protocol):
    """What the canary and the updater need of the device (`edge_agent.runtime.Runtime`): its
    settings, skills and log, its backend, and the adapter each skill runs."""

    backend: Backend

    def pinned_backend(self, adapter: str | None) -> Backend: ...
    def adapter_of(self, skill: str) -> str | None: ...
    def load_adapter(self, name: str, path: Path) -> None: ...
    def swap_adapter(self, skill: str, adapter: str | Path | None) -> str | None: ...


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
class Example:
    """A request and the call it should get (None: an answer in words)."""

    request: Request
    gold: ToolCall | None


@dataclass(frozen=True)
class CanaryRules:
    min_canary: float = 0.5  # the score the new adapter must reach on its own canary set
    tolerance: float = 0.02  # how far below the current adapter it may fall
    recent_limit: int = 32  # recent turns of the skill replayed from the log

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
    tools: str = ""  # the tools the calls were proposed with

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
        result = agent.run(request.text)
    except BackendError as exc:
        log.debug("canary request failed with adapter %s: %s", adapter, exc)
        return None
    return result.tool_calls[0].call if result.tool_calls else None


def run_canary(
    runtime: AdapterHost,
    release: AdapterRelease,
    candidate: str,
    *,
    subject: CanarySubject | None = None,
    rules: CanaryRules | None = None,
) -> CanaryReport:
    """Check ``candidate`` (loaded into ``runtime`` already) against the skill's current
    adapter; see the module docstring for the rules. ``subject``: the skill, tools and
    recent turns to use (default: `canary_subject`)."""
    rules = rules or CanaryRules()
    subject = subject or canary_subject(runtime, release.skill, rules.recent_limit)
    incumbent = runtime.adapter_of(release.skill)
    canary = [Example(Request(c.text, c.context), c.call) for c in release.canary]
    new = _score(runtime, subject, candidate, canary)
    report = CanaryReport(release.skill, candidate, incumbent, new, tools=subject.tools_from)
    if not canary or new.value < rules.min_canary:
        return _verdict(report, rules)  # no need to measure the current adapter
    report.canary_old = _score(runtime, subject, incumbent, canary)
    recent = [Example(Request(t.request, t.context), t.call) for t in subject.recent]
    if recent:
        report.recent_new = _score(runtime, subject, candidate, recent)
        report.recent_old = _score(runtime, subject, incumbent, recent)
    return _verdict(report, rules)


def _score(
    runtime: AdapterHost, subject: CanarySubject, adapter: str | None, rows: Sequence[Example]
) -> Rate:
    """How many of `rows` the skill's scorer counts right with `adapter`."""
    hits = 0
    for row in rows:
        call = propose(runtime.pinned_backend, subject.toolset, adapter, row.request)
        hits += bool(subject.skill.score(call, row.gold))
    return Rate(hits, len(rows))


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
            f"exact match on {recent_new.n} recent turns of {report.skill} fell from "
            f"{recent_old} to {recent_new}"
        )
    return problems


def _summary(report: CanaryReport) -> str:
    text = f"canary exact {report.canary_new} (current: {report.canary_old})"
    if report.recent_new is None:
        return text + f"; no recent turns of {report.skill} logged"
    return text + f"; exact on recent turns {report.recent_new} (current: {report.recent_old})"


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
) -> UpdateReport:
    """One update round: for each skill this device runs (``skills``: only those) with a
    release newer than anything decided on here, for this base model: download → install →
    canary → activate, or reject. Releases of skills it does not run are skipped, with why."""
    report = UpdateReport()
    try:
        releases = source.refresh()
    except EdgeAgentError as exc:
        report.error = exc
        return report
    asked = set(skills) if skills is not None else None
    runs = set(device_skills(runtime.settings))
    identity = runtime.backend.identity
    for release in _newer(releases, identity, installed, (asked, runs), report.skipped):
        outcome = _update(source, installed, runtime, release, rules or CanaryRules())
        if outcome.action == "activated":
            outcome.embedder = fetch_embedder(source, release, runtime.settings.embedders_dir)
        report.outcomes.append(outcome)
    done = {o.release for o in report.outcomes}
    folder = runtime.settings.embedders_dir
    report.embedders = _retry_embedders(source, installed, folder, asked, done)
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
    skills: tuple[set[str] | None, set[str]],
    skipped: list[str],
) -> list[AdapterRelease]:
    """The newest release per skill for this base, when the device runs the skill and the
    release is newer than every one decided on here (a rejected version is never retried; a
    candidate a round left undecided is). ``skills``: (asked for, or None: all; run here)."""
    asked, runs = skills
    ours = identity.as_dict() if identity is not None else None
    newest: dict[str, AdapterRelease] = {}
    for r in releases:
        if asked is not None and r.skill not in asked:
            continue
        if r.base_identity != ours:
            skipped.append(f"{r.name}: made for another base model")
        elif r.skill not in newest or r.version > newest[r.skill].version:
            newest[r.skill] = r
    pending = []
    for skill, release in sorted(newest.items()):
        if skill not in runs:
            skipped.append(f"{release.name}: {not_run(skill)}")
            log.info("adapters: %s", skipped[-1])
        elif release.version > _decided(installed, skill):
            pending.append(release)
        else:
            skipped.append(f"{release.name}: nothing newer than what is installed")
    return pending


def not_run(skill: str) -> str:
    """Why a release of `skill` is not pulled; configuring the skill lifts it."""
    return (
        f'not pulled: this device does not run {skill} (set `tools = "{skill}"` or add a '
        f"[skills.{skill}] table to config.toml, and the next pull takes it)"
    )


def _decided(installed: InstalledAdapters, skill: str) -> int:
    """The newest version of `skill` this device activated or rejected (0: none)."""
    versions = [a.release.version for a in installed.history(skill) if a.status != "candidate"]
    return max(versions, default=0)


def _update(
    source: AdapterSource,
    installed: InstalledAdapters,
    runtime: AdapterHost,
    release: AdapterRelease,
    rules: CanaryRules,
) -> UpdateOutcome:
    outcome = UpdateOutcome(release.skill, release.name, release.version)
    try:  # the canary's tools first: a skill that cannot be checked now is not downloaded
        subject = canary_subject(runtime, release.skill, rules.recent_limit)
        entry = installed.install(release, source.download(release))
    except EdgeAgentError as exc:  # not installed, or left a candidate: a later round retries
        outcome.reason, outcome.error = str(exc), exc
        return outcome
    try:
        runtime.load_adapter(entry.name, installed.verified_path(entry))
        outcome.canary = run_canary(runtime, release, entry.name, subject=subject, rules=rules)
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
