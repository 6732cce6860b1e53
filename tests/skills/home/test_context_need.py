"""The home skill's bound on one turn's tokens: above every real turn of the HA test split."""

from collections.abc import Iterator

import pytest

from edge_agent import prompt
from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.settings import load_settings
from edge_agent.skills.home import context_need, dataset
from edge_agent.skills.home.inventory import Inventory
from edge_agent.skills.home.retrieve import context_block
from edge_agent.skills.home.skill import skill
from edge_agent.skills.home.toolset import home_toolset
from tests.backends.support import smollm2_path

MARGIN = 2.0  # the bound must hold twice the longest real turn


@pytest.fixture(scope="module")
def smollm2() -> Iterator[LlamaCppBackend]:
    path = smollm2_path()
    with LlamaCppBackend(path, n_ctx=4096, n_threads=1) as backend:
        yield backend


@pytest.mark.integration
def test_the_bound_holds_every_real_turn_of_the_test_split_with_margin(smollm2) -> None:
    tools = home_toolset(inventory=Inventory(entities=[]))  # the adapted prompt names no tool
    longest = 0
    for row in dataset.load_split("test"):
        home = row.inventory()
        block = context_block(row.sentence, row.speaker_area, home)
        messages = prompt.messages_for(row.sentence, tools, context=block, adapted=True)
        turn = len(smollm2.tokenize_prompt(messages))
        call = len(smollm2._encode_text(prompt.call_json(row.call(), tools), special=False))
        assert context_need.turn_bound(home, row.speaker_area) >= MARGIN * (turn + call), row.id
        request = len(smollm2._encode_text(row.sentence, special=False))
        assert request <= context_need.REQUEST_TOKENS, row.id
        assert len(smollm2._encode_text(block, special=False)) <= (
            context_need.context_block_bytes(home, row.speaker_area)
        )
        longest = max(longest, turn + call)
    device = context_need.turn_tokens(load_settings(), adapted=True)
    assert device is not None and device >= MARGIN * longest


def test_the_bound_counts_the_agents_call_budget_and_the_homes_longest_lines() -> None:
    home = Inventory.default()
    tools = home_toolset(inventory=home)
    bound = context_need.turn_bound(home)
    assert bound > prompt.token_budget(prompt.output_schema(tools)) + context_need.REQUEST_TOKENS
    bigger = home.model_copy(deep=True)
    bigger.entities[0].name = "A much longer name " * 10
    assert context_need.turn_bound(bigger) > bound


def test_the_skill_states_its_bound_only_for_an_adapted_turn(tmp_path) -> None:
    settings = load_settings()
    tokens = skill.context_tokens(settings, adapted=True)
    assert tokens == context_need.turn_bound(Inventory.default())
    # the bare model's prompt lists every tool and tool results are fed back: no bound
    assert skill.context_tokens(settings, adapted=False) is None


def test_a_real_home_is_bounded_by_its_longest_possible_lines() -> None:
    ha = load_settings(home_backend="home_assistant", home_url="http://127.0.0.1:1")
    simulated = context_need.turn_tokens(load_settings(), adapted=True)
    tokens = context_need.turn_tokens(ha, adapted=True)
    assert tokens is not None and simulated is not None and tokens > simulated
