"""The template used when a GGUF carries none: the architecture's own turn format."""

from __future__ import annotations

from edge_agent.backends._chat_template import CHATML_TEMPLATE, ChatTemplate, fallback_template

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Lights on"},
]


def test_gemma_turns_fold_the_system_prompt_into_the_first_user_turn() -> None:
    prompt = ChatTemplate(fallback_template("gemma3")).render(MESSAGES)
    assert prompt == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nLights on<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_other_architectures_keep_chatml() -> None:
    assert fallback_template("llama") == CHATML_TEMPLATE
    assert fallback_template("") == CHATML_TEMPLATE
