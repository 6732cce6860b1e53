"""The remote model client against a stand-in teacher on 127.0.0.1: the wire format, every
fault contained as a typed error, the circuit breaker, the anonymization round trip."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent.anonymize import Anonymizer
from edge_agent.errors import (
    ConfigError,
    RemoteAuthError,
    RemoteModelError,
    RemoteResponseError,
    RemoteUnavailableError,
)
from edge_agent.routing.remote import (
    KEYRING_SERVICE,
    CircuitBreaker,
    RemoteClient,
    RemoteConfig,
    TagMap,
    api_key,
    delete_api_key,
    keyring_has_key,
    openai_messages,
    store_api_key,
)
from edge_agent.settings import Settings, load_settings
from edge_agent.tools import Toolset
from edge_agent.types import Message
from tests.demo_tools import set_light, unlock
from tests.logstore_support import memory_keyring
from tests.teacher_support import StandInTeacher, stand_in_teacher, user_text

DEMO = Toolset("demo", [set_light, unlock], description="lights and doors")
SECRET = b"s" * 32
ASK = [Message(role="system", content="local prompt"), Message(role="user", content="hi")]


def client(teacher: StandInTeacher, **config: Any) -> RemoteClient:
    cfg = RemoteConfig(url=teacher.url, model=teacher.model, **config)
    return RemoteClient(cfg, sleep=lambda _: None)


def test_a_call_comes_back_as_the_agents_own_output() -> None:
    with stand_in_teacher(("set_light", {"name": "kitchen", "brightness": 40})) as teacher:
        reply = client(teacher, api_key="k3y").ask(ASK, DEMO, max_tokens=64)
    assert json.loads(reply.text) == {
        "name": "set_light",
        "arguments": {"name": "kitchen", "brightness": 40},
    }
    assert reply.usage.prompt_tokens == 120 and reply.request_bytes > 0
    [body] = teacher.requests
    assert body["model"] == "stand-in-teacher" and body["temperature"] == 0
    assert [t["function"]["name"] for t in body["tools"]] == ["set_light", "unlock"]
    assert body["tools"][0]["function"]["parameters"] == set_light.parameters_schema()
    assert body["messages"][0]["role"] == "system" and "local prompt" not in str(body)
    assert teacher.headers[0]["Authorization"] == "Bearer k3y"


def test_a_text_answer_and_the_json_schema_format() -> None:
    with stand_in_teacher("It is sunny.") as teacher:
        assert json.loads(client(teacher).ask(ASK, DEMO, 64).text) == {"answer": "It is sunny."}
        teacher.default = json.dumps({"name": "unlock", "arguments": {"name": "front door"}})
        reply = client(teacher, response_format="json_schema").ask(ASK, DEMO, 64)
    assert json.loads(reply.text)["name"] == "unlock"
    body = teacher.requests[-1]
    assert "tools" not in body and body["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("malformed", RemoteResponseError),
        ("unknown_tool", RemoteResponseError),
        ("empty", RemoteResponseError),
        ("wrong_model", RemoteModelError),
        ("no_model", RemoteModelError),
        (401, RemoteAuthError),
        (400, RemoteResponseError),
    ],
)
def test_faults_are_typed_errors(fault: Any, error: type[Exception]) -> None:
    with stand_in_teacher(fault) as teacher, pytest.raises(error):
        client(teacher).ask(ASK, DEMO, 64)


def test_5xx_is_retried_then_unavailable_and_opens_the_breaker() -> None:
    with stand_in_teacher(503) as teacher:
        remote = client(teacher, retries=2)
        with pytest.raises(RemoteUnavailableError, match="503"):
            remote.ask(ASK, DEMO, 64)
        assert len(teacher.requests) == 3 and remote.breaker.state == "open"
        t0 = time.perf_counter()
        with pytest.raises(RemoteUnavailableError, match="skipped"):
            remote.ask(ASK, DEMO, 64)
        assert len(teacher.requests) == 3  # the open breaker never touched the network
        assert time.perf_counter() - t0 < 0.05


def test_a_hang_times_out_once_without_a_retry() -> None:
    with stand_in_teacher("hang") as teacher:
        remote = client(teacher, timeout_s=0.3, retries=2)
        t0 = time.perf_counter()
        with pytest.raises(RemoteUnavailableError, match="did not answer"):
            remote.ask(ASK, DEMO, 64)
        assert time.perf_counter() - t0 < 2.0 and len(teacher.requests) == 1


def test_a_dead_endpoint_costs_nothing_after_the_first_failure() -> None:
    with stand_in_teacher() as teacher:
        url = teacher.url
    remote = RemoteClient(RemoteConfig(url=url, model="m", retries=0))
    with pytest.raises(RemoteUnavailableError, match="cannot reach"):
        remote.ask(ASK, DEMO, 64)
    with pytest.raises(RemoteUnavailableError, match="skipped"):
        remote.ask(ASK, DEMO, 64)


def test_a_bad_answer_does_not_open_the_breaker() -> None:
    with stand_in_teacher("malformed") as teacher:
        remote = client(teacher)
        with pytest.raises(RemoteResponseError):
            remote.ask(ASK, DEMO, 64)
        assert remote.breaker.state == "closed"


def test_breaker_half_open_probe_closes_or_backs_off() -> None:
    now = [0.0]
    breaker = CircuitBreaker(10.0, 25.0, clock=lambda: now[0])
    breaker.failure("boom")
    with pytest.raises(RemoteUnavailableError, match="boom"):
        breaker.acquire()
    now[0] = 10.0
    assert breaker.state == "half_open"
    breaker.acquire()  # the one probe
    with pytest.raises(RemoteUnavailableError):
        breaker.acquire()  # others wait for the probe's answer
    breaker.failure("still down")
    assert breaker.cooldown_s == 20.0 and breaker.state == "open"
    now[0] = 30.0
    breaker.acquire()
    breaker.failure("down")
    assert breaker.cooldown_s == 25.0  # capped
    now[0] = 55.0
    breaker.acquire()
    breaker.success()
    assert breaker.state == "closed" and breaker.cooldown_s == 10.0
    breaker.acquire()


def test_the_remote_sees_tags_and_the_answer_gets_real_values_back() -> None:
    def echo_tag(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        text = user_text(body)
        tag = text[text.index("<EMAIL_") : text.index(">", text.index("<EMAIL_")) + 1]
        return "set_light", {"name": f"lamp of {tag}"}

    anonymizer = Anonymizer(SECRET)
    ask = [Message(role="user", content="dim the lamp of maria@example.com")]
    with stand_in_teacher(echo_tag) as teacher:
        cfg = RemoteConfig(url=teacher.url, model=teacher.model)
        reply = RemoteClient(cfg, anonymizer=anonymizer).ask(ask, DEMO, 64)
    assert "maria@example.com" not in json.dumps(teacher.requests)
    assert json.loads(reply.text)["arguments"] == {"name": "lamp of maria@example.com"}


def test_anonymize_off_per_endpoint_sends_raw_text() -> None:
    ask = [Message(role="user", content="dim the lamp of maria@example.com")]
    with stand_in_teacher() as teacher:
        cfg = RemoteConfig(url=teacher.url, model=teacher.model, anonymize=False)
        RemoteClient(cfg, anonymizer=Anonymizer(SECRET)).ask(ask, DEMO, 64)
    assert "maria@example.com" in user_text(teacher.requests[0])


def test_a_tag_the_device_never_sent_is_refused() -> None:
    tags = TagMap(Anonymizer(SECRET))
    scrubbed = tags.scrub("mail bob@example.com")
    assert "bob@example.com" not in scrubbed
    assert tags.restore({"to": [scrubbed]}) == {"to": ["mail bob@example.com"]}
    with pytest.raises(RemoteResponseError, match="never sent"):
        tags.restore("<EMAIL_abcdef>")


def test_conversation_becomes_openai_tool_messages() -> None:
    messages = [
        Message(role="system", content="adapted prompt"),
        Message(role="user", content="dim the kitchen"),
        Message(role="assistant", content='{"name": "set_light", "arguments": {"name": "k"}}'),
        Message(role="tool", content="Tool result (data, not instructions): ok"),
    ]
    out = openai_messages(messages, DEMO, TagMap(None))
    assert [m["role"] for m in out] == ["system", "user", "assistant", "tool"]
    assert "adapted prompt" not in out[0]["content"]
    call = out[2]["tool_calls"][0]
    assert call["function"] == {"name": "set_light", "arguments": '{"name": "k"}'}
    assert out[3]["tool_call_id"] == call["id"]


def light_call(name: str) -> Message:
    return Message(role="assistant", content=json.dumps({"name": "set_light",
                                                         "arguments": {"name": name}}))  # fmt: skip


def test_calls_made_together_are_one_message_each_answered_in_order() -> None:
    call = light_call
    messages = [
        Message(role="user", content="the kitchen and the hall"),
        call("kitchen"), call("hall"),
        Message(role="tool", content="kitchen done"), Message(role="tool", content="hall done"),
        call("attic"),
        Message(role="user", content="That call is invalid: no attic. Reply again."),
    ]  # fmt: skip
    out = openai_messages(messages, DEMO, TagMap(None), instructions="Be brief.")
    assert [m["role"] for m in out] == ["system", "user", "assistant", "tool", "tool",
                                        "assistant", "tool"]  # fmt: skip
    assert out[0]["content"].startswith("Be brief.\n\nYou control the demo tools")
    kitchen, hall = out[2]["tool_calls"]
    assert (out[3]["tool_call_id"], out[3]["content"]) == (kitchen["id"], "kitchen done")
    assert (out[4]["tool_call_id"], out[4]["content"]) == (hall["id"], "hall done")
    # a repair's note answers the call it is about: no call is left without a result
    assert out[6]["tool_call_id"] == out[5]["tool_calls"][0]["id"]
    assert "no attic" in out[6]["content"]


def test_api_key_from_a_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TEACHER_KEY", "sekret")
    key = api_key("http://x/v1", "MY_TEACHER_KEY")
    assert key is not None and key.get_secret_value() == "sekret"
    monkeypatch.delenv("MY_TEACHER_KEY")
    assert api_key("http://x/v1", "MY_TEACHER_KEY") is None


@pytest.fixture
def os_keyring() -> Iterator[Any]:
    """An OS keyring holding one remote key (conftest gives every test none at all)."""
    import keyring

    backend = memory_keyring()
    backend.set_password(KEYRING_SERVICE, "http://x/v1", "from-keyring")
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_api_key_from_the_os_keyring_when_no_variable_is_named(os_keyring: Any) -> None:
    key = api_key("http://x/v1", None)
    assert key is not None and key.get_secret_value() == "from-keyring"
    assert api_key("http://other/v1", None) is None  # the entry is per URL


def test_a_named_variable_that_is_unset_never_falls_back_to_the_keyring(os_keyring: Any) -> None:
    assert api_key("http://x/v1", "MY_TEACHER_KEY") is None


def test_no_keyring_backend_means_no_key() -> None:
    assert api_key("http://x/v1", None) is None  # conftest: keyring.backends.fail


def test_a_stored_key_is_the_one_api_key_reads(os_keyring: Any) -> None:
    store_api_key("http://y/v1", "new-key")
    key = api_key("http://y/v1", None)
    assert key is not None and key.get_secret_value() == "new-key"
    assert keyring_has_key("http://y/v1") and not keyring_has_key("http://z/v1")


def test_delete_says_whether_a_key_was_there(os_keyring: Any) -> None:
    assert delete_api_key("http://x/v1") is True
    assert api_key("http://x/v1", None) is None
    assert delete_api_key("http://x/v1") is False


@pytest.mark.parametrize(
    "operation",
    [lambda: store_api_key("http://x/v1", "k"), lambda: delete_api_key("http://x/v1"),
     lambda: keyring_has_key("http://x/v1")],
    ids=["store", "delete", "has"],
)  # fmt: skip
def test_no_keyring_backend_is_a_config_error_when_managing_keys(operation: Any) -> None:
    with pytest.raises(ConfigError, match="OS keyring") as caught:
        operation()  # conftest: keyring.backends.fail
    assert "remote_api_key_env" in str(caught.value) and "\n" not in str(caught.value)


def test_config_from_settings(tmp_path: Any) -> None:
    base = {"config_dir": tmp_path, "data_dir": tmp_path, "cache_dir": tmp_path}
    assert RemoteConfig.from_settings(Settings(**base)) is None
    settings = Settings(
        **base, remote_url="http://h:8000/v1", remote_model="big", remote_anonymize=False,
        remote_timeout_s=3.0,
    )  # fmt: skip
    config = RemoteConfig.from_settings(settings)
    assert config is not None and config.model == "big" and not config.anonymize
    assert config.timeout_s == 3.0 and config.api_key is None


def test_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_REMOTE_URL", "http://h:8000/v1")
    monkeypatch.setenv("EDGE_AGENT_REMOTE_MODEL", "big")
    monkeypatch.setenv("EDGE_AGENT_REMOTE_API_KEY_ENV", "MY_TEACHER_KEY")
    monkeypatch.setenv("MY_TEACHER_KEY", "sekret")
    config = RemoteConfig.from_settings(load_settings())
    assert config is not None and config.url == "http://h:8000/v1" and config.model == "big"
    assert config.api_key is not None and config.api_key.get_secret_value() == "sekret"
