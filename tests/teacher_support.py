"""A stand-in teacher for the routing tests: a real OpenAI-compatible HTTP server on 127.0.0.1
that answers with scripted tool calls, or with a fault (5xx, a hang, a malformed call, an
unknown tool, another model, 401, 404). No large model runs here; it stands in for one."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[str, dict[str, Any]] | str  # a call (name, arguments), or plain text
Step = Answer | Callable[[dict[str, Any]], Answer] | int  # an int: that HTTP status
FAULTS = ("hang", "malformed", "unknown_tool", "wrong_model", "no_model", "empty")


class StandInTeacher:
    """Serves ``/v1/chat/completions``. ``script`` is consumed one entry per request (then
    ``default`` repeats): a call, a text answer, a callable of the request body, an HTTP
    status, or a fault name from FAULTS."""

    def __init__(self, default: Step | str = ("set_light", {"name": "kitchen"})) -> None:
        self.model = "stand-in-teacher"
        self.default = default
        self.script: list[Step | str] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.hang_s = 5.0
        self.released = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> StandInTeacher:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        step = self.script.pop(0) if self.script else self.default
        if isinstance(step, int):
            return step, {"error": {"message": f"stand-in teacher says {step}"}}
        if isinstance(step, str) and step in FAULTS:
            return self._fault(step, body)
        answer = step(body) if callable(step) else step
        return 200, completion(self.model, answer)

    def _fault(self, fault: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if fault == "hang":
            self.released.wait(self.hang_s)
            return 200, completion(self.model, ("set_light", {"name": "late"}))
        if fault == "no_model":
            message = f"The model `{body.get('model')}` does not exist"
            return 404, {"error": {"message": message, "code": "model_not_found"}}
        if fault == "empty":
            return 200, {"model": self.model, "choices": []}
        if fault == "wrong_model":
            return 200, completion("some-other-model", ("set_light", {"name": "kitchen"}))
        name = "LaunchMissiles" if fault == "unknown_tool" else "set_light"
        data = completion(self.model, (name, {}))
        if fault == "malformed":
            data["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{not json"
        return 200, data


def completion(model: str, answer: Answer) -> dict[str, Any]:
    if isinstance(answer, str):
        message: dict[str, Any] = {"role": "assistant", "content": answer}
    else:
        function = {"name": answer[0], "arguments": json.dumps(answer[1])}
        call = {"id": "call_1", "type": "function", "function": function}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132},
    }


def _handler(teacher: StandInTeacher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            teacher.requests.append(body)
            teacher.headers.append(dict(self.headers))
            status, data = teacher.reply(body)
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gave up (a hang): no one to answer
                self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def stand_in_teacher(
    default: Step | str = ("set_light", {"name": "kitchen"}),
) -> Iterator[StandInTeacher]:
    teacher = StandInTeacher(default).start()
    try:
        yield teacher
    finally:
        teacher.stop()


def user_text(body: dict[str, Any]) -> str:
    """What the teacher was told the user said (the first user message)."""
    return next(m["content"] for m in body["messages"] if m["role"] == "user")
