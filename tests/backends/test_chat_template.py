"""The chat template renderer: HF-compatible output, sandboxing and typed errors."""

from __future__ import annotations

import pytest

from edge_agent.backends._chat_template import CHATML_TEMPLATE, ChatTemplate, TemplateRejectedError
from edge_agent.errors import BackendError, InvalidModelFileError

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
]


def test_chatml_renders_turns_and_generation_prompt() -> None:
    prompt = ChatTemplate(CHATML_TEMPLATE).render(MESSAGES)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_generation_prompt_can_be_left_off() -> None:
    prompt = ChatTemplate(CHATML_TEMPLATE).render(MESSAGES, add_generation_prompt=False)
    assert prompt.endswith("Hi<|im_end|>\n")


def test_bos_and_eos_tokens_are_available() -> None:
    template = ChatTemplate(
        "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}",
        bos_token="<s>",
        eos_token="</s>",
    )
    assert template.render(MESSAGES) == "<s>Be brief.</s>Hi</s>"


def test_trim_and_lstrip_blocks_like_hugging_face() -> None:
    source = "{% for m in messages %}\n  {% if m %}{{ m['role'] }};{% endif %}\n{% endfor %}"
    assert ChatTemplate(source).render(MESSAGES) == "system;user;"


def test_tojson_does_not_html_escape() -> None:
    template = ChatTemplate("{{ messages[0] | tojson }}")
    assert template.render([{"role": "user", "content": "a<b & c"}]) == (
        '{"role": "user", "content": "a<b & c"}'
    )


def test_raise_exception_becomes_a_typed_error() -> None:
    template = ChatTemplate(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
    )
    with pytest.raises(TemplateRejectedError, match="user first"):
        template.render(MESSAGES)


def test_syntax_error_means_a_broken_model_file() -> None:
    with pytest.raises(InvalidModelFileError, match="does not compile"):
        ChatTemplate("{% for m in messages %}")


def test_sandbox_refuses_mutation() -> None:
    with pytest.raises(BackendError, match="failed to render"):
        ChatTemplate("{{ messages.append(1) }}").render(MESSAGES)


def test_optional_message_keys_pass_through() -> None:
    template = ChatTemplate("{{ messages[0].get('tool_call_id', 'none') }}")
    assert template.render([{"role": "tool", "content": "4", "tool_call_id": "c1"}]) == "c1"
