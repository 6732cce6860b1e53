"""Shared by the routing tests: a demo skill, a router to a stand-in teacher, an agent on a
scripted backend, a scripted backend whose tokens carry a chosen log-probability."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from edge_agent.agent import Agent, AgentConfig, InteractionLog
from edge_agent.anonymize import Anonymizer
from edge_agent.backends.base import Chunk, Done, GenerationRequest
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.routing.remote import RemoteClient, RemoteConfig
from edge_agent.routing.router import Router
from edge_agent.settings import RouteMode
from edge_agent.skills.skill import Skill
from edge_agent.tools import Toolset
from edge_agent.types import AgentResult, Interaction, Message
from tests.demo_tools import set_light, unlock

DEMO = Toolset("demo", [set_light, unlock], description="demo")
LOCAL = '{"name": "set_light", "arguments": {"name": "kitchen", "brightness": 40}}'
UNKNOWN = '{"name": "launch", "arguments": {}}'  # no such tool: invalid even after a repair
TEACHER_MODEL = "stand-in-teacher"


class ConfidenceBackend(ScriptedBackend):
    """ScriptedBackend whose chosen tokens carry the log-probability given per response."""

    def __init__(self, responses: Sequence[tuple[str, float]], *, name: str = "scripted") -> None:
        super().__init__([text for text, _ in responses], name=name)
        self.logprobs = [lp for _, lp in responses]

    def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
        lp = self.logprobs.pop(0)
        for chunk in super().generate(request):
            if isinstance(chunk, Done) or not request.logprobs:
                yield chunk
            else:  # the first token forced (0.0, left out), the rest chosen
                yield Chunk(chunk.text, chunk.token_ids, (0.0 if chunk.token_ids == (0,) else lp,))


class MemoryLog:
    """A stand-in for the sealed log: keeps each recorded turn as it would be read back."""

    def __init__(self) -> None:
        self.items: list[Interaction] = []

    def record(self, result: AgentResult, *, messages: list[Message], tools: object = None) -> str:
        self.items.append(Interaction(result=result.model_copy(deep=True), messages=messages))
        return result.id


def remote_client(url: str, model: str = TEACHER_MODEL) -> RemoteClient:
    config = RemoteConfig(url=url, model=model, retries=0, timeout_s=2)
    return RemoteClient(config, anonymizer=Anonymizer(b"s" * 32))


def router_to(url: str, model: str = TEACHER_MODEL, **rules: Any) -> Router:
    return Router(remote_client(url, model), **rules)


def demo_agent(
    responses: list[str],
    router: Router,
    mode: RouteMode,
    log: InteractionLog,
    toolset: Toolset = DEMO,
    **kwargs: Any,
) -> Agent:
    backend, config = ScriptedBackend(responses), AgentConfig(stop_after_call=True)
    return Agent(backend, toolset, config=config, log=log, router=router, route_mode=mode,
                 **kwargs)  # fmt: skip


def _lenient(got: object, gold: object) -> bool:
    return True  # a skill whose scorer accepts any call: the report must use it, not exact


LENIENT = Skill("lenient", toolset=lambda _settings: DEMO, scorer=_lenient)
