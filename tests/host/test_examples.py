"""Training examples: the device's prompt tokens, the canonical call, loss on the answer only."""

from __future__ import annotations

import pytest

from edge_agent.host.curate import Record
from edge_agent.host.examples import IGNORE, Tokenizer, build_example
from edge_agent.prompt import call_json, messages_for
from edge_agent.skills.home.toolset import home_toolset
from edge_agent.types import ToolCall
from tests.tinymodel import TinyModel


@pytest.fixture(scope="module")
def tokenizer(tiny_model: TinyModel):  # type: ignore[no-untyped-def]
    tok = Tokenizer(tiny_model.gguf_path)
    yield tok
    tok.close()


def test_prompt_is_masked_and_answer_is_the_canonical_call(tokenizer: Tokenizer) -> None:
    toolset = home_toolset()
    # arguments out of schema order: the example must use the grammar's order
    call = ToolCall(name="HassLightSet", arguments={"brightness": 50, "name": "desk lamp"})
    record = Record(id="a", request="dim the desk lamp", context="Speaker area: Office", call=call)
    example = build_example(record, toolset, tokenizer)
    prompt = tokenizer.backend.tokenize_prompt(
        messages_for(record.request, toolset, context=record.context, adapted=True)
    )
    answer = tokenizer.answer(call_json(call, toolset))
    assert example.input_ids == prompt + answer
    assert example.labels == [IGNORE] * len(prompt) + answer
    assert answer[-1] == tokenizer.end_of_turn and example.n_target == len(answer)
    assert call_json(call, toolset).index('"name"') < call_json(call, toolset).index("brightness")
