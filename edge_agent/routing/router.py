"""Heterogeneous routing: the local model first, a large model only when the local attempt
looks unreliable, and every escalation logged as a teacher label for the flywheel.

    request ─► local attempt (generate + validate; nothing runs yet) ─► signals ─► decide
        local   the held call ─► policy ─► execute                           route: local
        remote  the same turn on the remote backend ─► policy ─► execute     route: escalated
                (the local attempt is kept beside the teacher's call)
                remote down or broken ─► the held local call runs       route: local_fallback

Route modes, per skill (``Agent.route_mode``): ``local-first`` as above; ``teacher-first``
escalates every turn while the skill has no adapter (day 0: the teacher answers, the local
attempt is kept beside its call as a shadow), then is local-first; ``local-only`` never
escalates. Turns served locally because the remote was down are marked ``queued`` for a late
teacher label (``routing.labels``) when the skill opts in, and so is a random share of the
confident local turns (``routing.audit``), so the teacher keeps checking them.

Signals: min and mean log-probability over the tokens the local model chose (forced tokens
skipped), a call valid only after repair, no valid call at all, and the distance of the
request to the clusters the adapter was trained on (when an embedder and centroids exist).
Per-tool rules and a per-request override come first. Thresholds are never hand-set, and
each skill has its own: ``calibrate`` picks them on the skill's calibration set or on its
teacher-labelled shadow attempts in the log (``edge-agent route calibrate [--from-log]``).
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field, ValidationError, model_validator

from edge_agent import prompt
from edge_agent.agent import Agent, RouteOverride
from edge_agent.backends.base import Backend, Chunk, Done, GenerationRequest
from edge_agent.errors import ConfigError, RemoteError, RemoteResponseError, RemoteUnavailableError
from edge_agent.routing.audit import NO_AUDIT, AuditShare
from edge_agent.types import AgentResult, LocalAttempt, Message, RouteSignals, Routing, ToolCall

if TYPE_CHECKING:
    from edge_agent.agent import Turn
    from edge_agent.anonymize import Anonymizer
    from edge_agent.routing.remote import RemoteClient
    from edge_agent.settings import Settings

logger = logging.getLogger(__name__)
_WORD = re.compile(r"[0-9a-z]+")

ToolRoute = Literal["always_remote", "never_remote"]
Decision = Literal["local", "remote"]
Signal = Literal["min_logprob", "mean_logprob", "distance"]
_HELD_TTL_S = 600.0  # as long as a server keeps a confirmation id, and then some
_HELD_MAX = 64


class Embedder(Protocol):
    """Sentence embeddings (``edge_agent.routing.embed.Embedder``): one row per text."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Clusters:
    """The clusters an adapter was trained on, and the embedder that placed them."""

    embedder: Embedder
    centroids: np.ndarray  # (k, dim)


# The clusters of the adapter a turn runs (by its name; None: the bare base), if known.
ClustersFor = Callable[[str | None], Clusters | None]


# --- thresholds and their file --------------------------------------------------------------


class Thresholds(BaseModel):
    """Escalate when a log-probability is below its threshold, the distance above its
    threshold, or (if chosen) the call needed a repair. None: the signal is not used."""

    min_logprob: float | None = None
    mean_logprob: float | None = None
    max_distance: float | None = None
    escalate_repaired: bool = False
    escalate_ungrounded: bool = False

    def escalates(self, s: RouteSignals) -> str | None:
        """Why these signals escalate, or None to stay local."""
        if self.min_logprob is not None and _below(s.min_logprob, self.min_logprob):
            return f"min log-prob {s.min_logprob:.3f} < {self.min_logprob:.3f}"
        if self.mean_logprob is not None and _below(s.mean_logprob, self.mean_logprob):
            return f"mean log-prob {s.mean_logprob:.3f} < {self.mean_logprob:.3f}"
        if _above(s.distance, self.max_distance):
            return f"distance to the training clusters {s.distance:.3f} > {self.max_distance:.3f}"
        if self.escalate_repaired and s.repaired:
            return "the call was valid only after a repair"
        if self.escalate_ungrounded and s.ungrounded:
            return "the call names something neither the request nor the context mentions"
        return None


def _below(value: float | None, threshold: float) -> bool:
    return value is not None and value < threshold  # no chosen token: all forced, certain


def _above(value: float | None, threshold: float | None) -> bool:
    return value is not None and threshold is not None and value > threshold


class SignalRecord(BaseModel):
    """One labelled local attempt: its signals and whether its call was right. Numbers and a
    row id only, no text: calibration files hold no request."""

    id: str
    tool: str | None = None
    signals: RouteSignals
    correct: bool
    latency_ms: float = 0.0
    weight: float = Field(1.0, gt=0)  # the turns it stands for: an audited pair, 1/share


class Calibration(BaseModel):
    """One skill's router thresholds for one model + adapter, and what they did on the rows
    they were picked on (``edge-agent route calibrate``): the skill's own calibration set
    (home: the HA validation split), or its teacher-labelled shadow attempts in the log."""

    format: Literal[1] = 1
    model: str
    adapter: str | None
    toolset: str
    skill: str = ""  # "": a file from before per-skill calibration, whose skill is its toolset
    split: str = "validation"  # or "log"
    target_accuracy: float = Field(ge=0, le=1)
    remote_accuracy: float = Field(1.0, ge=0, le=1)  # assumed for escalated requests
    thresholds: Thresholds
    met: bool  # whether any thresholds reach the target on this split
    stats: dict[str, float] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    records: list[SignalRecord] = Field(default_factory=list)

    @model_validator(mode="after")
    def _skill_of_toolset(self) -> Calibration:
        self.skill = self.skill or self.toolset
        return self

    def save(self, path: Path) -> None:
        """Store these thresholds as the skill's in the calibration file at `path`; the
        other skills' stay as they are."""
        Calibrations.load(path).with_calibration(self).save(path)

    def applies_to(self, agent: Agent) -> bool:
        """Whether these are the thresholds of the agent's skill (its toolset's name files
        its turns), model and adapter."""
        return (self.model, self.adapter, self.skill) == (
            agent.model_name, agent.adapter, agent.toolset.name,
        )  # fmt: skip


class Calibrations(BaseModel):
    """The calibration file: each skill's thresholds, picked on its own rows. A file of one
    calibration (before skills had their own) reads as that calibration's skill's."""

    format: Literal[2] = 2
    skills: dict[str, Calibration] = Field(default_factory=dict)

    def of(self, skill: str) -> Calibration | None:
        return self.skills.get(skill)

    def with_calibration(self, calibration: Calibration) -> Calibrations:
        return Calibrations(skills={**self.skills, calibration.skill: calibration})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=1), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Calibrations:
        """The calibrations at `path` (none if there is no file); ConfigError if broken."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("format", 1) == 1:
                one = Calibration.model_validate(data)
                return cls(skills={one.skill: one})
            return cls.model_validate(data)
        except FileNotFoundError:
            return cls()
        except (OSError, ValidationError, ValueError) as exc:
            raise ConfigError(
                f"the router calibration {path} is unreadable ({exc}); run "
                "`edge-agent route calibrate` again"
            ) from exc


# --- signals ---------------------------------------------------------------------------------


def make_signals(
    logprobs: Sequence[float],
    *,
    repaired: bool = False,
    invalid: bool = False,
    ungrounded: bool = False,
    distance: float | None = None,
) -> RouteSignals:
    """Signals from the chosen tokens' log-probabilities (forced tokens already left out)."""
    chosen = [lp for lp in logprobs if lp != 0.0]
    return RouteSignals(
        min_logprob=min(chosen) if chosen else None,
        mean_logprob=sum(chosen) / len(chosen) if chosen else None,
        chosen_tokens=len(chosen), repaired=repaired, invalid=invalid, ungrounded=ungrounded,
        distance=distance,
    )  # fmt: skip


def ungrounded(call: ToolCall, shown: str, schema: Mapping[str, Any]) -> bool:
    """Whether a free-text argument of `call` holds a word the model was never shown (`shown`:
    the user's words and the device's context). Closed choices (enums) are the grammar's."""
    seen = {_stem(w) for w in _WORD.findall(shown.casefold())}
    props = schema.get("properties", {})
    for key, value in call.arguments.items():
        prop = props.get(key, {})
        if "enum" in prop or "enum" in prop.get("items", {}):
            continue
        for text in value if isinstance(value, list) else [value]:
            words = (
                {_stem(w) for w in _WORD.findall(text.casefold())}
                if isinstance(text, str)
                else set()
            )
            if not words <= seen:
                return True
    return False


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def request_index(messages: Sequence[Message], request: str) -> int | None:
    """Where a turn's own request is in its prompt: the last user message that starts with
    it (the device's context follows it). Earlier user messages are the conversation before
    the request; later ones are a repair's note, which never starts with the request."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if m.role == "user" and (m.content == request or m.content.startswith(request + "\n\n")):
            return i
    return None


def nearest_distance(embedder: Embedder, centroids: np.ndarray, text: str) -> float:
    """Cosine distance from the request to its nearest training cluster centroid."""
    vector = np.asarray(embedder.embed([text]), dtype=np.float32)[0]
    vector = vector / (np.linalg.norm(vector) or 1.0)
    unit = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return float(1.0 - np.max(unit @ vector))


@dataclass
class Attempt:
    """The local model's attempt at a turn, held before anything ran."""

    turn: Turn
    call: ToolCall | None
    signals: RouteSignals
    local: LocalAttempt

    @property
    def result(self) -> AgentResult:
        return self.turn.result


# --- the router ------------------------------------------------------------------------------


class Router:
    """Decides per request, after the local attempt, whether to escalate; attach it to an
    ``Agent`` (``router=``). One router may serve several agents: its remote client, and so
    its circuit breaker, is shared. ``audit``: the share of confident local turns the
    teacher labels too (none by default); ``rng`` draws them."""

    def __init__(
        self,
        remote: RemoteClient | None,
        *,
        calibration: Calibration | Calibrations | None = None,
        tools: Mapping[str, ToolRoute] | None = None,
        embedder: Embedder | None = None,
        centroids: np.ndarray | Sequence[Sequence[float]] | None = None,
        clusters: ClustersFor | None = None,
        queue_offline: bool = True,
        audit: AuditShare = NO_AUDIT,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.remote = remote
        self.calibrations = (  # each skill's own thresholds
            Calibrations().with_calibration(calibration)
            if isinstance(calibration, Calibration)
            else calibration or Calibrations()
        )
        self.tools = dict(tools or {})
        self.embedder = embedder
        has_centroids = centroids is not None and len(centroids) > 0
        self.centroids = np.asarray(centroids, dtype=np.float32) if has_centroids else None
        self.clusters = clusters  # per adapter; `embedder` + `centroids` given: those instead
        self.queue_offline = queue_offline
        self.audit = audit
        self.rng = rng or random.Random()
        self.clock = clock
        self._held: OrderedDict[tuple[str, str, str | None], tuple[float, ToolCall, Routing]]
        self._held = OrderedDict()

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()

    # -- the turn ---------------------------------------------------------------------------
    def run_turn(self, agent: Agent, turn: Turn, route: RouteOverride = "auto") -> AgentResult:
        confirmed = turn.confirmed or turn.approved is not None
        replayed = self._replay(agent, turn) if confirmed else None
        if replayed is not None:
            self._remember(agent, turn, replayed)  # a later call in it may ask in turn
            return replayed
        attempt = self.attempt(turn)
        if attempt.result.failure == "cancelled" or attempt.result.outcome == "timeout":
            return attempt.result  # nothing left to route: no teacher is asked past a deadline
        decision, reason = self.decide(agent, attempt, route)
        routing = Routing(decision=decision, reason=reason, signals=attempt.signals)
        local = decision == "local"
        result = turn.resume() if local else self._escalate(agent, attempt, routing)
        if local:
            routing.audit_share = self._audit(agent, attempt, route, result)
            routing.queued = routing.audit_share is not None
        result.routing = routing
        self._remember(agent, turn, result)
        return result

    def attempt(self, turn: Turn) -> Attempt:
        """The local attempt and its signals; the call is validated, held and not run."""
        result = turn.propose()
        call = turn.held[0].model_copy(deep=True) if turn.held else None
        invalid = result.outcome == "failed" and result.failure in ("invalid_call", "step_limit")
        at = request_index(turn.messages, result.request)
        shown = turn.messages[at].content if at is not None else result.request
        made_up = turn.held is not None and ungrounded(
            turn.held[0], shown, turn.held[1].parameters_schema()
        )
        signals = make_signals(
            turn.logprobs, repaired=turn.repaired, invalid=invalid, ungrounded=made_up,
            distance=self._distance(result.request, turn.agent.adapter),
        )  # fmt: skip
        local = LocalAttempt(
            model=result.model, adapter=result.adapter, call=call,
            answer=result.answer or None, error=result.error, latency_ms=result.latency_ms,
            usage=result.usage,
        )  # fmt: skip
        return Attempt(turn, call, signals, local)

    def decide(self, agent: Agent, attempt: Attempt, route: RouteOverride) -> tuple[Decision, str]:
        """Where the turn goes, and why: the request's override, the skill's route mode
        (local-only never escalates), per-tool rules, teacher-first until the skill has an
        adapter, then failures and the calibrated signals."""
        if route != "auto":
            return route, f"the request asked for the {route} model"
        skill = agent.toolset.name
        if agent.route_mode == "local-only":
            return "local", f"local-only: {skill} never escalates"
        name = attempt.call.name if attempt.call else None
        rule = self.tools.get(name) if name else None
        if rule == "never_remote":
            return "local", f"the routing policy keeps {name} on the device"
        if rule == "always_remote":
            return "remote", f"the routing policy sends {name} to the remote model"
        if agent.route_mode == "teacher-first" and agent.adapter is None:
            return "remote", f"teacher-first: no promoted adapter for {skill}"
        if attempt.signals.invalid:
            return "remote", f"the local attempt failed: {attempt.local.error}"
        calibration = self.calibrations.of(skill)
        if calibration is None or not calibration.applies_to(agent):
            return "local", "no calibration for this model and adapter: only failures escalate"
        why = calibration.thresholds.escalates(attempt.signals)
        return ("remote", why) if why else ("local", "the local attempt is confident")

    def _audit(
        self, agent: Agent, attempt: Attempt, route: RouteOverride, result: AgentResult
    ) -> float | None:
        """The skill's audit share when this local turn is drawn for a teacher label too
        (the late-label queue asks later: nothing waits here). Never where the turn was kept
        on the device on purpose, nor while the teacher cannot be reached."""
        name = attempt.call.name if attempt.call else None
        kept = route != "auto" or agent.route_mode == "local-only"
        kept = kept or (name is not None and self.tools.get(name) == "never_remote")
        if kept or result.outcome != "answered" or not self._reachable():
            return None
        return self.audit.draw(agent.toolset.name, self.rng)

    def _reachable(self) -> bool:
        return self.remote is not None and self.remote.breaker.state == "closed"

    def _distance(self, text: str, adapter: str | None) -> float | None:
        if self.embedder is not None and self.centroids is not None:
            return nearest_distance(self.embedder, self.centroids, text)
        found = self.clusters(adapter) if self.clusters is not None else None
        if found is None:
            return None
        return nearest_distance(found.embedder, found.centroids, text)

    # -- escalation -------------------------------------------------------------------------
    def _escalate(self, agent: Agent, attempt: Attempt, routing: Routing) -> AgentResult:
        if self.remote is None:
            offline = RemoteUnavailableError("offline: the remote model is not reachable")
            return self._fallback(attempt, None, routing, offline)
        backend = self.remote.backend(agent.toolset, attempt.turn.conversation.instructions)
        remote_turn = teacher_turn(attempt.turn, backend)
        try:
            result = remote_turn.run()
            if result.failure == "invalid_call":  # invalid even after a repair: not a label
                raise RemoteResponseError(result.error or "the remote's call was invalid")
        except RemoteError as exc:
            return self._fallback(attempt, remote_turn, routing, exc)
        finally:
            routing.remote_bytes, routing.remote_ms = backend.request_bytes, backend.remote_ms
        result.route, result.model, result.adapter = "escalated", self.remote.model, None
        result.latency_ms += attempt.local.latency_ms
        routing.remote_model, routing.local_attempt = self.remote.model, attempt.local
        routing.remote_usage = result.usage
        return result

    def _fallback(
        self, attempt: Attempt, remote_turn: Turn | None, routing: Routing, exc: RemoteError
    ) -> AgentResult:
        routing.remote_error = str(exc)
        routing.remote_model = self.remote.model if self.remote else None
        if remote_turn is not None and remote_turn.result.tool_calls:
            # The remote already acted: running the local call too could act twice.
            result = remote_turn.result
            result.outcome, result.failure, result.route = "failed", "remote_error", "escalated"
            result.error = f"the remote model failed after acting: {exc}"
            routing.local_attempt = attempt.local
            return result
        logger.warning("the remote model did not serve this turn, the local model did: %s", exc)
        opted_in = self.queue_offline and attempt.turn.agent.teacher_labels_offline
        routing.queued = opted_in and isinstance(exc, RemoteUnavailableError)
        result = attempt.turn.resume()
        result.route = "local_fallback"
        return result

    # -- confirmations: what the user confirmed is what runs --------------------------------
    def _remember(self, agent: Agent, turn: Turn, result: AgentResult) -> None:
        """A call held for confirmation is replayed, not regenerated, when the user confirms:
        a remote model (or a changed route) could otherwise propose another call."""
        if result.outcome != "needs_confirmation" or not result.tool_calls:
            return
        key = (agent.toolset.name, result.request, turn.area)
        routing = result.routing or Routing(decision="local", reason="")
        self._held[key] = (self.clock(), result.tool_calls[-1].call, routing)
        while len(self._held) > _HELD_MAX:
            self._held.popitem(last=False)

    def _replay(self, agent: Agent, turn: Turn) -> AgentResult | None:
        held = self._held.pop((agent.toolset.name, turn.result.request, turn.area), None)
        if held is None or self.clock() - held[0] > _HELD_TTL_S:
            return None
        _, call, routing = held
        escalated = routing.decision == "remote" and routing.remote_error is None
        instructions = turn.conversation.instructions
        teacher = self.remote.backend(agent.toolset, instructions) if self.remote else None
        then = teacher if escalated and teacher else turn.backend
        # A turn with an approved call replays that call itself (what the user confirmed)
        replay = _Replay(prompt.call_json(call, agent.toolset), then=then)
        chosen = then if turn.approved is not None else replay
        result = (teacher_turn(turn, chosen) if then is teacher else turn.fork(chosen)).run()
        if escalated:
            result.route, result.model, result.adapter = (
                "escalated",
                routing.remote_model or "",
                None,
            )
        elif routing.decision == "remote":
            result.route = "local_fallback"
        result.routing = routing.model_copy(update={"reason": "the call the user confirmed"})
        return result


def teacher_turn(turn: Turn, backend: Backend) -> Turn:
    """The turn forked to the teacher, which sees the conversation as the client sent it: an
    adapter's prompt leaves the earlier exchanges out (it was trained on single requests),
    the teacher's prompt puts them back between the system prompt and the request."""
    fork = turn.fork(backend)
    history = list(turn.conversation.history)
    at = request_index(fork.messages, fork.result.request)
    if at is not None and fork.messages[1:at] != history:
        fork.messages[1:at] = history
    return fork


class _Replay(Backend):
    """Answers the first request with a fixed output, later ones with `then`."""

    def __init__(self, text: str, *, then: Backend) -> None:
        self.text: str | None = text
        self.then = then

    def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
        if self.text is None:
            yield from self.then.generate(request)
            return
        text, self.text = self.text, None
        yield Done(text)


def open_router(
    settings: Settings, *, clusters: ClustersFor | None = None, keep: Iterable[str] = ()
) -> Router | None:
    """The router the settings describe: None without a remote model. Offline settings keep
    the router (turns it would escalate are marked local_fallback and queued) but never let
    it reach the network. `clusters`: each adapter's training clusters (the runtime's);
    `keep`: words the anonymizer keeps readable, as in what sync sends."""
    from edge_agent.routing.remote import RemoteClient, RemoteConfig

    config = RemoteConfig.from_settings(settings)
    if config is None:
        return None
    remote = None
    if not settings.is_offline:
        remote = RemoteClient(
            config, anonymizer=_anonymizer(settings, keep) if config.anonymize else None
        )
    calibrations = Calibrations.load(settings.route_path)
    return Router(
        remote, calibration=calibrations, tools=settings.route_tools, clusters=clusters,
        audit=AuditShare.from_settings(settings),
    )  # fmt: skip


def _anonymizer(settings: Settings, keep: Iterable[str]) -> Anonymizer:
    from edge_agent.anonymize import Anonymizer, device_secret

    return Anonymizer(device_secret(settings.config_dir), keep)
