"""The agent loop: the model proposes a call, the policy decides, the tool runs, repeat.

    request ─► prompt (system + tools, user + device context) ─► constrained generation
        ─► parse + validate (one repair attempt) ─► policy (allow / confirm / deny)
        ─► execute (timeout, exceptions contained) ─► result fed back as data ─► …
        ─► answer, or a typed failure the router can escalate

Every output is constrained to the union of the enabled tools' call schemas plus a plain
answer, so an unknown tool or a malformed call cannot come out of the decoder; validation
still catches what a grammar cannot express (cross-field rules), once repaired, then fails.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol, cast

from pydantic import BaseModel, Field

from edge_agent import compound, prompt
from edge_agent.backends.base import Backend, Done, GenerationRequest
from edge_agent.conversation import (  # noqa: F401 - where callers find Conversation, call_text
    Conversation,
    call_text,
    turn_messages,
)
from edge_agent.deadline import Clock, Deadline
from edge_agent.errors import (
    ConfigError,
    EdgeAgentError,
    ToolArgumentsError,
    ToolError,
    ToolTimeoutError,
    TurnTimeoutError,
    UnknownToolError,
)
from edge_agent.policy import Decision, Policy
from edge_agent.settings import RouteMode
from edge_agent.tools import Tool, ToolSchema, Toolset, execute
from edge_agent.types import AgentResult, Effect, Message, ToolCall, ToolOutcome, Usage

logger = logging.getLogger(__name__)

ConfirmFn = Callable[[ToolCall, Decision], bool]
ContextFn = Callable[[str, str | None], str | None]
Failure = Literal["invalid_call", "step_limit", "cancelled", "repeated_call", "tool_error"]
_FAILED = frozenset({"error", "invalid", "timeout", "denied"})
RouteOverride = Literal["auto", "local", "remote"]


class InteractionLog(Protocol):
    """Where turns are recorded (``logstore.LogStore``); ``record`` returns once committed."""

    def record(
        self, result: AgentResult, *, messages: list[Message], tools: list[ToolSchema] | None
    ) -> str: ...


class TurnRouter(Protocol):
    """Serves a turn after the local attempt: locally, or escalated (``routing.router.Router``)."""

    def run_turn(self, agent: Agent, turn: Turn, route: RouteOverride) -> AgentResult: ...


class AgentConfig(BaseModel):
    max_steps: int = Field(4, ge=1, description="model generations per turn")
    max_tokens: int | None = Field(
        None,
        ge=8,
        description="a ceiling per generation; None: the tokens the longest output "
        "the call schema allows can take (prompt.token_budget)",
    )
    max_string_chars: int = Field(
        prompt.STRING_CHARS,
        ge=1,
        le=512,
        description="the decoder's cap on a string argument whose schema sets no maxLength",
    )
    max_answer_chars: int = Field(
        prompt.ANSWER_CHARS, ge=1, le=512, description="the decoder's cap on a plain answer"
    )
    repair_attempts: int = Field(1, ge=0)
    retry_failed_calls: bool | None = Field(
        None,
        description="after a call fails (tool error or timeout) let the model try again; "
        "None: yes on a base model, no on a trained adapter (the home adapter proposed the "
        "failing call again in 22 of 24 such turns of the HA test split: a second generation "
        "that doubled the turn for nothing)",
    )
    tool_timeout_s: float = Field(5.0, gt=0)
    turn_deadline_s: float | None = Field(
        20.0, gt=0, description="a bound on a whole turn; past it: TurnTimeoutError (None: none)"
    )
    stop_after_call: bool = Field(
        False, description="end the turn after a successful call; its result is the answer"
    )
    area: str | None = Field(None, description="the speaker's area when the request has none")
    delegate: bool = Field(
        False,
        description="the client runs the tools (OpenAI tools=): a call that passes the policy "
        "ends the turn and goes back to the client, never run here",
    )


class Agent:
    """Runs turns of one toolset on one backend. One turn at a time (a lock serialises them):
    a device holds a single model context."""

    def __init__(
        self,
        backend: Backend,
        toolset: Toolset,
        *,
        policy: Policy | None = None,
        config: AgentConfig | None = None,
        context: ContextFn | None = None,
        confirm: ConfirmFn | None = None,
        adapter: str | None = None,
        model_name: str | None = None,
        log: InteractionLog | None = None,
        router: TurnRouter | None = None,
        route_mode: RouteMode = "local-first",
        teacher_labels_offline: bool = True,
        clock: Clock = time.monotonic,  # what turn deadlines are read on (tests move it)
    ):
        self.backend = backend
        self.toolset = toolset
        self.policy = policy or Policy()
        self.config = config or AgentConfig()
        self.context = context or toolset.context
        self.confirm = confirm
        self.adapter = adapter
        self.model_name = model_name or backend.model_name
        self.log = log
        self.router = router
        # the skill's routing (see settings.RouteMode); the router reads these
        self.route_mode: RouteMode = route_mode
        self.teacher_labels_offline = teacher_labels_offline
        self.clock = clock
        self._schema = _capped_schema(self, toolset, allow_answer=True)
        self._budget = prompt.token_budget(self._schema, self.config.max_tokens)
        self._lock = threading.Lock()
        self._compound = compound.CompoundRuns()

    # -- public API -----------------------------------------------------------------------
    def run(
        self,
        text: str,
        *,
        area: str | None = None,
        confirmed: bool = False,
        approved: ToolCall | None = None,
        cancel: threading.Event | None = None,
        route: RouteOverride = "auto",
        conversation: Conversation | None = None,
    ) -> AgentResult:
        """One turn. ``confirmed=True`` pre-approves every call of this turn the policy wants
        confirmed (the user said yes to the whole turn, as at a terminal). ``approved`` is one
        held call the user confirmed (a server's confirmation id): it runs first, exactly as
        held, and only it is approved; any other call that needs confirming asks again.
        ``route`` overrides the router for this request ("local" or "remote"); without a
        router only "auto" and "local" apply. ``conversation``: what a client running its
        own tools sent around the request (see `Conversation`). Past ``turn_deadline_s``
        the turn is logged, then raises `TurnTimeoutError` (its ``result``: the turn)."""
        if route == "remote" and self.router is None:
            raise ConfigError("route 'remote' needs a remote model: set remote_url, remote_model")
        steps = self._steps(text, area, conversation)
        deadline = Deadline(self.config.turn_deadline_s, self.clock)  # one for all steps
        one = functools.partial(
            self._run_one, confirmed=confirmed, cancel=cancel, route=route, deadline=deadline
        )
        if len(steps) > 1:  # each step its own turn: see compound.CompoundRuns
            return self._compound.run(text, steps, area, approved, one)
        return one(text, area, approved, conversation=conversation)

    def _run_one(
        self, text: str, area: str | None, approved: ToolCall | None, *, confirmed: bool,
        cancel: threading.Event | None, route: RouteOverride, deadline: Deadline,
        conversation: Conversation | None = None,
    ) -> AgentResult:  # fmt: skip
        with self._lock:
            turn = self.turn(
                text, area=area, confirmed=confirmed, approved=approved, cancel=cancel,
                conversation=conversation, deadline=deadline,
            )  # fmt: skip
            # A turn answered from the client's tool result generates nothing: nothing to route.
            if self.router is None or turn.settled:
                result = turn.run()
            else:
                result = self.router.run_turn(self, turn, route)
        self._record(result, turn.messages)
        if result.outcome == "timeout":
            raise TurnTimeoutError(result.error or "the turn ran past its deadline", result)
        return result

    def _steps(self, text: str, area: str | None, talk: Conversation | None) -> list[str]:
        """The steps the toolset's `split` finds; one for a client's exchange (its calls
        and results belong to the whole request) or a toolset without the hook."""
        if self.toolset.split is None or talk is not None or self.config.delegate:
            return [text]
        return self.toolset.split(text, area or self.config.area) or [text]

    def turn(
        self,
        text: str,
        *,
        area: str | None = None,
        confirmed: bool = False,
        approved: ToolCall | None = None,
        cancel: threading.Event | None = None,
        conversation: Conversation | None = None,
        deadline: Deadline | None = None,
    ) -> Turn:
        """A turn not yet run; the router drives it (``propose`` then ``resume``)."""
        area = area or self.config.area
        return Turn(self, text, area, confirmed, cancel, approved=approved,
                    conversation=conversation, deadline=deadline)  # fmt: skip

    async def arun(self, text: str, **kwargs: Any) -> AgentResult:
        """The same turn for asyncio daemons; the model runs in a worker thread."""
        return await asyncio.to_thread(self.run, text, **kwargs)

    def tool(self, name: str) -> Tool:
        return self.toolset.get(name)

    def _record(self, result: AgentResult, messages: list[Message]) -> None:
        """Write the turn through to the sealed log; a log failure (disk full, a bad key) is
        counted by the log and never fails the turn."""
        if self.log is None:
            return
        try:
            self.log.record(result, messages=messages, tools=self.toolset.schemas())
        except EdgeAgentError as exc:
            logger.warning("interaction %s not logged: %s", result.id, exc)


class Turn:
    """The state of one turn; a class so each step is a small method.

    A `TurnRouter` drives it through this public surface: ``run()`` (the local attempt),
    ``fork(backend)`` (the same turn on another backend), ``result``, ``messages``,
    ``logprobs`` (of the chosen tokens), ``hold``/``held`` (stop before the first call's
    policy check, so the router decides where the call comes from) and ``approved`` (the
    call the user confirmed, which the turn replays first instead of generating)."""

    def __init__(
        self,
        agent: Agent,
        text: str,
        area: str | None,
        confirmed: bool,
        cancel: threading.Event | None,
        *,
        backend: Backend | None = None,
        approved: ToolCall | None = None,
        conversation: Conversation | None = None,
        deadline: Deadline | None = None,
    ):
        self.agent = agent
        self.backend = backend or agent.backend
        self.cancel = cancel or threading.Event()
        self.confirmed = confirmed
        self.area = area
        self.started = time.perf_counter()
        self.deadline = deadline or Deadline(agent.config.turn_deadline_s, agent.clock)
        self.result = AgentResult(
            request=text, model=agent.model_name, adapter=agent.adapter,
            skill=agent.toolset.name, toolset=agent.toolset.fingerprint,
        )  # fmt: skip
        self.conversation = conversation or Conversation()
        context = agent.context(text, area) if agent.context else None
        self.messages = turn_messages(
            text, agent.toolset, context, self.conversation, adapted=agent.adapter is not None
        )
        self.schema = _output_schema(agent, self.conversation)
        self.max_tokens = (
            agent._budget
            if self.schema is agent._schema
            else prompt.token_budget(self.schema, agent.config.max_tokens)
        )
        self.repairs_left = agent.config.repair_attempts
        self.tool_results_seen = len(self.conversation.prior)  # results the model has seen
        self.result.prior_calls = len(self.conversation.prior)
        self.logprobs: list[float] = []  # of the tokens the model chose, every generation
        self.hold = False  # stop before the first call's policy check: the router decides
        self.held: tuple[ToolCall, Tool, str] | None = None
        # Replayed, not generated again: a sampled or remote model could propose another call.
        self.approved = approved
        self._replay = approved is not None
        self._approval_used = False
        # (tool, arguments) -> how it went: a model without an adapter tends to propose the
        # same call again and again; a repeat neither runs twice nor loops to the step limit.
        self._outcomes = {_key(o.call): o for o in self.conversation.prior}

    @property
    def settled(self) -> bool:
        """Answered before generating: an agent that stops after a call (an adapter's) has
        its answer in the client's result of that call."""
        return bool(self.conversation.prior) and self.agent.config.stop_after_call

    def run(self) -> AgentResult:
        try:
            self._loop()
        finally:
            self.result.latency_ms = (time.perf_counter() - self.started) * 1000
        return self.result

    def propose(self) -> AgentResult:
        """The local attempt: generate and validate, holding the first call unexecuted."""
        self.hold = True
        return self.run()

    def resume(self) -> AgentResult:
        """Run the held call through the policy, execute it, and finish the turn."""
        held, self.held, self.hold = self.held, None, False
        try:
            if held is not None and not self._call(*held):
                self._loop()
        finally:
            self.result.latency_ms = (time.perf_counter() - self.started) * 1000
        return self.result

    def fork(self, backend: Backend) -> Turn:
        """The same request as a fresh turn on another backend (the remote model)."""
        request, area, approved = self.result.request, self.area, self.approved
        return Turn(
            self.agent, request, area, self.confirmed, self.cancel, backend=backend,
            approved=approved, conversation=self.conversation, deadline=self.deadline,
        )  # fmt: skip

    @property
    def repaired(self) -> bool:
        return self.repairs_left < self.agent.config.repair_attempts

    def _loop(self) -> None:
        if self._replay and not self.cancel.is_set() and self._replay_approved():
            return None
        if self.settled and not self.result.steps:
            self.result.answer = _spoken(self.conversation.prior[-1].result)
            return None
        for _ in range(self.agent.config.max_steps - self.result.steps):
            if self.cancel.is_set():
                return self._fail("cancelled", "the turn was cancelled")
            if self.deadline.expire(self.result):
                return None
            output = self._generate()
            if output is None:
                return None  # cancelled or past the deadline mid-generation
            step_done = self._handle(output)
            if step_done:
                return None
        self._fail("step_limit", f"no answer within {self.agent.config.max_steps} steps")

    # -- one step -------------------------------------------------------------------------
    def _generate(self) -> str | None:
        request = GenerationRequest(
            messages=self.messages,
            max_tokens=self.max_tokens,
            json_schema=self.schema,
            logprobs=True,
            temperature=self.conversation.temperature,
            top_p=self.conversation.top_p,
            seed=self.conversation.seed,
            deadline=self.deadline.monotonic(),
        )
        t0 = time.perf_counter()
        parts: list[str] = []
        for chunk in self.backend.generate(request):
            parts.append(chunk.text)
            self.logprobs += [lp for lp in chunk.logprobs if lp != 0.0]  # 0.0: forced
            if isinstance(chunk, Done):
                self._account(chunk)
            elif self.cancel.is_set():
                self._fail("cancelled", "the turn was cancelled during generation")
                return None
        self.result.steps += 1
        self._time("generate_ms", t0)
        if self.result.outcome == "timeout":  # cut short: not a call to act on
            return None
        return "".join(parts)

    def _handle(self, output: str) -> bool:
        """Act on one model output; True when the turn is over."""
        try:
            parsed = prompt.parse_output(output)
            if isinstance(parsed, str):
                self.result.answer = parsed
                return True
            tool = self._validated(parsed)
        except (ToolArgumentsError, UnknownToolError) as exc:
            return self._repair(output, str(exc))
        return self._proposed(parsed, tool, output)

    def _replay_approved(self) -> bool:
        """The confirmed call, as if the model had proposed it again; True when the turn is
        over. Its arguments were valid when held: a ToolError now means the tool changed."""
        self._replay = False
        call = cast(ToolCall, self.approved).model_copy(deep=True)
        tool = self._validated(call)
        return self._proposed(call, tool, prompt.call_json(call, self.agent.toolset))

    def _validated(self, call: ToolCall) -> Tool:
        tool = self.agent.tool(call.name)
        call.arguments = tool.validate(call.arguments)
        return tool

    def _proposed(self, call: ToolCall, tool: Tool, output: str) -> bool:
        if self.deadline.expire(self.result):  # too late to run it here or to route it
            return True
        if self.hold and self.held is None:  # nothing runs before the router has decided
            self.held = (call, tool, output)
            return True
        return self._call(call, tool, output)

    def _repair(self, output: str, problem: str) -> bool:
        if self.repairs_left <= 0:
            self._fail("invalid_call", f"the model's call was invalid after repair: {problem}")
            return True
        self.repairs_left -= 1
        self.messages += [
            Message(role="assistant", content=output),
            Message(role="user", content=f"That call is invalid: {problem}. Reply again."),
        ]
        return False

    def _call(self, call: ToolCall, tool: Tool, output: str) -> bool:
        if self.deadline.expire(self.result):  # no call starts after the deadline
            return True
        before = self._outcomes.get(_key(call))
        if before is not None and self._repeated(call, tool, before):
            return True
        decision = self.agent.policy.decide_call(
            call,
            tool,
            self.agent.toolset.names,
            user_request=self.result.request,
            origin_step=self.tool_results_seen,
            context=[self.area] if self.area else [],
        )
        if decision.action != "deny" and self.agent.config.delegate:
            # the client's own confirmation flow decides; the reason goes with the call
            reason = decision.reason if decision.action == "confirm" else None
            self._record(call, tool, "delegated", error=reason)
            return True
        if decision.action == "confirm" and not self._confirmed(call, decision):
            self._record(call, tool, "needs_confirmation", error=decision.reason)
            self.result.outcome = "needs_confirmation"
            self.result.confirmation_id = call.id
            return True
        if decision.action == "deny":
            outcome = self._record(call, tool, "denied", error=decision.reason)
        else:
            outcome = self._execute(call, tool)
        return self._after_call(call, outcome)

    def _confirmed(self, call: ToolCall, decision: Decision) -> bool:
        if (self.confirmed and not decision.ungrounded) or self._approves(call):
            return True
        return bool(self.agent.confirm and self.agent.confirm(call, decision))

    def _approves(self, call: ToolCall) -> bool:
        """Whether `call` is the one the user confirmed (same tool, same arguments), once."""
        approved = self.approved
        if approved is None or self._approval_used:
            return False
        self._approval_used = (call.name, call.arguments) == (approved.name, approved.arguments)
        return self._approval_used

    def _execute(self, call: ToolCall, tool: Tool) -> ToolOutcome:
        t0 = time.perf_counter()
        try:
            limit = min(tool.timeout_s, self.agent.config.tool_timeout_s)
            value = execute(tool, call.arguments, timeout_s=limit)
        except ToolError as exc:
            status = "timeout" if isinstance(exc, ToolTimeoutError) else "error"
            return self._record(call, tool, status, error=str(exc), started=t0)
        return self._record(call, tool, "ok", result=value, started=t0)

    def _repeated(self, call: ToolCall, tool: Tool, before: ToolOutcome) -> bool:
        """End the turn on a repeat of a failed call, of a done change or of a call the client
        ran already (it answers from its result); True when ended."""
        if before.status == "delegated":
            self._record(call, tool, "denied", error="the client ran it already")
            self.result.answer = _spoken(before.result)
            return True
        if before.status in _FAILED:
            why = before.error or before.status
            self._fail("repeated_call", f"the model proposed {call.name} again after: {why}")
            return True
        if before.status == "ok" and before.effect is not Effect.READ_ONLY:
            self._record(call, tool, "denied", error="already done in this turn")
            self.result.answer = _spoken(before.result)
            return True
        return False  # a read may be repeated: the world may have changed

    def _after_call(self, call: ToolCall, outcome: ToolOutcome) -> bool:
        self._outcomes[_key(call)] = outcome
        if outcome.status == "ok" and self.agent.config.stop_after_call:
            self.result.answer = _spoken(outcome.result)
            return True
        if outcome.status in ("error", "timeout") and not self._retries_failed_calls():
            self._fail("tool_error", f"{call.name} failed: {outcome.error or outcome.status}")
            return True
        self.tool_results_seen += 1
        self.messages += [
            Message(role="assistant", content=prompt.call_json(call, self.agent.toolset)),
            Message(role="tool", content=prompt.tool_result_content(outcome.result, outcome.error)),
        ]
        return False

    def _retries_failed_calls(self) -> bool:
        retry = self.agent.config.retry_failed_calls
        return self.agent.adapter is None if retry is None else retry

    # -- bookkeeping ----------------------------------------------------------------------
    def _record(
        self,
        call: ToolCall,
        tool: Tool,
        status: Any,
        *,
        result: Any = None,
        error: str | None = None,
        started: float | None = None,
    ) -> ToolOutcome:
        elapsed = (time.perf_counter() - started) * 1000 if started else 0.0
        outcome = ToolOutcome(
            call=call,
            effect=tool.effect_of(call.arguments),
            status=status,
            result=result,
            error=error,
            duration_ms=elapsed,
        )
        self.result.tool_calls.append(outcome)
        return outcome

    def _fail(self, kind: Failure, message: str) -> None:
        self.result.outcome = "failed"
        self.result.failure = kind
        self.result.error = message

    def _account(self, done: Done) -> None:
        if done.finish_reason == "deadline":  # the backend stopped decoding at the deadline
            self.deadline.end(self.result)
        u = self.result.usage
        self.result.usage = Usage(
            prompt_tokens=u.prompt_tokens + done.usage.prompt_tokens,
            completion_tokens=u.completion_tokens + done.usage.completion_tokens,
            cached_prompt_tokens=u.cached_prompt_tokens + done.usage.cached_prompt_tokens,
        )
        self.result.timings["first_token_ms"] = self.result.timings.get(
            "first_token_ms", done.timings.first_token_ms
        )

    def _time(self, key: str, t0: float) -> None:
        elapsed = (time.perf_counter() - t0) * 1000
        self.result.timings[key] = self.result.timings.get(key, 0.0) + elapsed


def _output_schema(agent: Agent, talk: Conversation) -> dict[str, Any]:
    """What the decoder may write: any call or an answer; a call when the client requires
    one; a call of the one tool it named."""
    if not talk.required and talk.tool is None:
        return agent._schema
    tools = agent.toolset.subset([talk.tool]) if talk.tool else agent.toolset
    return _capped_schema(agent, tools, allow_answer=False)


def _capped_schema(agent: Agent, tools: Toolset, *, allow_answer: bool) -> dict[str, Any]:
    config = agent.config
    return prompt.output_schema(tools, allow_answer=allow_answer,
                                string_chars=config.max_string_chars,
                                answer_chars=config.max_answer_chars)  # fmt: skip


def _key(call: ToolCall) -> tuple[str, str]:
    return call.name, json.dumps(call.arguments, sort_keys=True, default=str)


def _spoken(result: Any) -> str:
    """A short answer from a tool result: its ``speech`` if it has one, else the value."""
    if isinstance(result, dict) and isinstance(result.get("speech"), str):
        return str(result["speech"])
    return prompt.dumps(result) if not isinstance(result, str) else result
