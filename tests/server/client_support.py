"""What the client-tools server tests share: `edge-agent serve`'s app over a real runtime (the
tiny random llama in llama.cpp, the sealed log, the router) with a stand-in teacher as the
remote model, and an app's two tools.

The tiny model's weights are random: its calls are valid by grammar, never meaningful. Where a
test needs a meaningful answer, the skill routes ``teacher-first`` and the STAND-IN TEACHER
(tests/teacher_support.py, a real HTTP server on 127.0.0.1, no large model) answers: the call
``get_weather(city="Paris")`` for a new request, a sentence from the tool result once the
conversation holds one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge_agent.cli.serve import build_app
from edge_agent.runtime import Runtime, open_runtime
from edge_agent.server.app import serve_in_thread
from edge_agent.settings import load_settings
from edge_agent.types import Interaction
from tests.teacher_support import Answer, StandInTeacher

SKILL = "weather"  # configured route = "teacher-first"
CONTEXT = 2048  # the untrained prompt lists the tools: ~300 tiny-tokenizer tokens
ANSWER = "It is sunny in Paris."
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city."}},
    "required": ["city"],
    "additionalProperties": False,
}
ALARM_SCHEMA = {
    "type": "object",
    "properties": {"hour": {"type": "integer"}, "minute": {"type": "integer"}},
    "required": ["hour", "minute"],
    "additionalProperties": False,
}
FUNCTIONS = [
    {"name": "get_weather", "description": "Current weather in a city.",
     "parameters": WEATHER_SCHEMA},
    {"name": "set_alarm", "description": "Set an alarm.", "parameters": ALARM_SCHEMA},
]  # fmt: skip
CHAT_TOOLS = [{"type": "function", "function": f} for f in FUNCTIONS]
RESPONSES_TOOLS = [{"type": "function", **f} for f in FUNCTIONS]


def weather_teacher(body: dict[str, Any]) -> Answer:
    """The stand-in teacher's policy: the weather call, or an answer after its result."""
    if any(m["role"] == "tool" for m in body["messages"]):
        return ANSWER
    return ("get_weather", {"city": "Paris"})


def open_device(model: Path, teacher: StandInTeacher) -> Runtime:
    """A runtime as `serve` opens it: the model, the log (key in a file), the teacher as
    the remote model (not anonymized: it reads the request as sent), the weather skill."""
    settings = load_settings(
        model=str(model), threads=1, context_size=CONTEXT, log_key_source="file",
        remote_url=teacher.url, remote_model=teacher.model, remote_anonymize=False,
        skills={SKILL: {"route": "teacher-first"}},
    )  # fmt: skip
    return open_runtime(settings)


@contextmanager
def serving(rt: Runtime) -> Iterator[str]:
    """`serve`'s app over the runtime, on 127.0.0.1; yields the base URL."""
    with serve_in_thread(build_app(rt)) as url:
        yield url


def records(rt: Runtime) -> list[Interaction]:
    """What the sealed log holds, read back through its keys."""
    log = rt.log()
    assert log is not None
    return list(log.interactions())
