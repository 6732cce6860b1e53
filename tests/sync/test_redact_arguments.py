"""A call's arguments leave the device scrubbed as the request they were copied from."""

from __future__ import annotations

from edge_agent.anonymize import Anonymizer
from edge_agent.sync.redact import redact
from edge_agent.types import (
    AgentResult,
    Effect,
    Interaction,
    LocalAttempt,
    Routing,
    ToolCall,
    ToolOutcome,
)

SECRET = b"test-secret-0123456789abcdef"


def _sent(request: str, arguments: dict[str, object]) -> AgentResult:
    call = ToolCall(name="Book", arguments=arguments)
    attempt = LocalAttempt(model="m", call=call.model_copy(deep=True))
    result = AgentResult(
        request=request, model="m", route="escalated",
        tool_calls=[ToolOutcome(call=call, effect=Effect.READ_ONLY, status="delegated")],
        routing=Routing(decision="remote", reason="r", local_attempt=attempt),
    )  # fmt: skip
    return redact(Interaction(result=result), Anonymizer(SECRET, set())).result


def test_a_value_copied_from_the_request_keeps_the_requests_tag() -> None:
    request = "I want to book a restaurant for 12 Gold Point Road"
    out = _sent(request, {"city": "Gold Point", "party": "restaurant"})
    tag = out.request.removeprefix("I want to book a restaurant for ")
    assert tag.startswith("<ADDRESS_")
    for call in (out.tool_calls[0].call, out.routing.local_attempt.call):  # type: ignore[union-attr]
        assert call is not None
        assert call.arguments == {"city": tag, "party": "restaurant"}  # words the request holds


def test_values_the_request_leaves_readable_stay_readable_and_others_are_scrubbed() -> None:
    out = _sent("add Cait Chambers to my road trip playlist",
                {"artist": "Cait Chambers", "playlist": "road trip", "note": "call 555-0100 2345",
                 "password": "road trip"})  # fmt: skip
    args = out.tool_calls[0].call.arguments
    assert args["artist"] in out.request and args["artist"].startswith("<PERSON_")
    assert args["playlist"] == "road trip"
    assert args["password"].startswith("<SECRET_")  # a secret by its key, request or not
    assert "555-0100" not in args["note"]  # not copied from the request: scrubbed alone
