"""Compound requests: a toolset's `split` hook makes one request several steps, each its own
turn (routed and logged as its own request), one result for all. ScriptedBackend stands in
for the model; `split_on_then` is a stand-in splitter (the home skill's is tested with it)."""

import pytest

from edge_agent.agent import Agent, AgentConfig, Conversation
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.policy import Policy
from edge_agent.tools import Toolset
from edge_agent.types import AgentResult, Message, ToolCall, ToolOutcome
from tests.demo_tools import STATE, set_light, unlock

KITCHEN_40 = '{"name": "set_light", "arguments": {"name": "kitchen", "brightness": 40}}'
HALL_10 = '{"name": "set_light", "arguments": {"name": "hall", "brightness": 10}}'
UNLOCK = '{"name": "unlock", "arguments": {"name": "front door"}}'
TWO = "set the kitchen light to 40 and then set the hall light to 10"


def split_on_then(request: str, area: str | None) -> list[str]:
    return request.split(" and then ")


def toolset(split=split_on_then) -> Toolset:
    return Toolset("demo", [set_light, unlock], split=split)


class RecordingLog:
    """Stands in for the sealed log (`InteractionLog`): keeps what it was asked to record."""

    def __init__(self) -> None:
        self.rows: list[tuple[AgentResult, list[Message]]] = []

    def record(self, result, *, messages, tools):
        self.rows.append((result, messages))
        return result.id


@pytest.fixture(autouse=True)
def clean_state():
    STATE.clear()


def adapted(responses, **kw) -> Agent:
    """As the runtime builds an agent with an adapter: the turn ends after a good call."""
    return Agent(
        ScriptedBackend(responses), toolset(), config=AgentConfig(stop_after_call=True), **kw
    )


def test_two_steps_make_two_calls_in_one_result_each_step_logged_as_its_own_request():
    log = RecordingLog()
    agent = adapted([KITCHEN_40, HALL_10], log=log)
    result = agent.run(TWO)
    assert STATE == {"kitchen": 40, "hall": 10}
    assert result.request == TWO and result.outcome == "answered"
    assert [c.call.arguments["name"] for c in result.tool_calls] == ["kitchen", "hall"]
    assert result.answer == "kitchen set to 40% hall set to 10%"
    assert result.steps == 2
    # each generation saw only its own step: the single-call prompt the adapter knows
    prompts = [r.messages[-1].content for r in agent.backend.requests]
    assert prompts == ["set the kitchen light to 40", "set the hall light to 10"]
    logged = [r.request for r, _ in log.rows]
    assert logged == ["set the kitchen light to 40", "set the hall light to 10"]
    assert [len(r.tool_calls) for r, _ in log.rows] == [1, 1]
    assert result.id == log.rows[-1][0].id  # feedback on the answer reaches a logged turn


def test_without_an_adapter_each_step_runs_until_its_own_answer():
    agent = Agent(
        ScriptedBackend(
            [KITCHEN_40, '{"answer": "Kitchen done."}', HALL_10, '{"answer": "Hall."}']
        ),
        toolset(),
    )
    result = agent.run(TWO)
    assert STATE == {"kitchen": 40, "hall": 10}
    assert result.answer == "Kitchen done. Hall." and len(result.tool_calls) == 2


def test_a_denied_first_step_stops_the_second():
    refusal = '{"answer": "I may not unlock doors."}'
    agent = adapted([UNLOCK, refusal, HALL_10], policy=Policy(tools={"unlock": "deny"}))
    result = agent.run("unlock the front door and then set the hall light to 10")
    assert "hall" not in STATE and "front door" not in STATE
    assert [c.status for c in result.tool_calls] == ["denied"]
    assert len(agent.backend.requests) == 2  # the denied step answered in words; no hall step
    assert result.answer.startswith("I may not unlock doors.")
    assert "did not do: 'set the hall light to 10'" in result.answer


def test_a_failed_step_stops_the_rest_and_names_them():
    bad = '{"name": "set_light", "arguments": {"name": "kitchen", "brightness": 400}}'
    agent = adapted([bad, bad, HALL_10])  # invalid, then invalid after the one repair
    result = agent.run(TWO)
    assert result.outcome == "failed" and result.failure == "invalid_call"
    assert STATE == {}
    assert "not done: 'set the hall light to 10'" in (result.error or "")


def test_a_step_waiting_for_a_yes_stops_the_rest_and_the_yes_resumes_there():
    text = TWO.replace(" and then ", " and then unlock the front door and then ")
    agent = adapted([KITCHEN_40, UNLOCK, HALL_10])
    held = agent.run(text)
    assert held.outcome == "needs_confirmation" and STATE == {"kitchen": 40}
    assert [c.status for c in held.tool_calls] == ["ok", "needs_confirmation"]
    assert held.confirmation_id == held.tool_calls[-1].call.id
    STATE.clear()
    done = agent.run(text, approved=held.tool_calls[-1].call)  # the server's confirmation
    # the kitchen step ran before the yes and does not run again; the rest does
    assert STATE == {"front door": "unlocked", "hall": 10}
    assert [c.call.name for c in done.tool_calls] == ["unlock", "set_light"]
    assert done.outcome == "answered"


def test_a_yes_the_agent_did_not_hold_runs_only_the_confirmed_call():
    agent = adapted([])  # nothing is generated: the confirmed call is replayed
    call = ToolCall(name="unlock", arguments={"name": "front door"})
    result = agent.run("unlock the front door and then set the hall light to 10", approved=call)
    assert STATE == {"front door": "unlocked"} and len(result.tool_calls) == 1


def test_one_step_and_no_hook_are_the_plain_turn():
    agent = Agent(
        ScriptedBackend([KITCHEN_40]), toolset(split=None), config=AgentConfig(stop_after_call=True)
    )
    result = agent.run(TWO)
    assert len(result.tool_calls) == 1 and result.request == TWO
    single = adapted([KITCHEN_40])
    assert single.run("set the kitchen light to 40").answer == "kitchen set to 40%"


def test_a_clients_exchange_is_never_split():
    prior = ToolOutcome(
        call=ToolCall(name="set_light", arguments={"name": "kitchen"}),
        effect="actuating",
        status="ok",
        result="ok",
    )
    agent = Agent(ScriptedBackend(['{"answer": "both done"}']), toolset())
    result = agent.run(TWO, conversation=Conversation(prior=[prior]))
    assert result.answer == "both done" and len(agent.backend.requests) == 1
    assert agent.backend.requests[0].messages[1].content.startswith(TWO)


def test_subset_keeps_the_split_hook():
    assert toolset().subset(["set_light"]).split is split_on_then
