"""How many tokens one home turn takes in the model's context: what the fit plan sizes the
KV cache to when the user sets no ``context_size`` (a 4,096-token f16 cache held 90 MB for
turns of ~200 tokens).

With an adapter (its one-line system prompt; the turn is the call) the bound is

    TEMPLATE_TOKENS                       chat markers of two messages + the assistant header
  + bytes of the adapted system prompt    prompt.system_prompt(home, adapted=True)
  + REQUEST_TOKENS                        the user's words (see below)
  + bytes of the longest context block    "Speaker area: <longest area>\\nDevices:\\n" and the
                                          retriever's DEFAULT_K longest lines of this home,
                                          each with STATE_SLACK for a state that grows
  + the call budget                       prompt.token_budget(prompt.output_schema(home)):
                                          the agent's own max_tokens, so the context never
                                          cuts a generation the agent allows

Bytes bound tokens: a byte-level BPE token is at least one byte (a digit or a rare word can
be one token per byte, so no tighter ratio is safe). The bound is loose on purpose: on the HA
test split, with SmolLM2's tokenizer, the longest real prompt + call is 213 tokens against a
bound of ~2,100, most of it the call budget (every string argument at its 160-character cap,
2 tokens a character). A failing call retried within the turn (a repair, an error fed back)
uses the room that budget leaves, as realistic calls are ~40 tokens; a turn that still
overflows ends in ContextLengthError naming ``context_size``.

The CLI and the server take a request of any length; a spoken command is a sentence, so
REQUEST_TOKENS (the split's longest is 17) is an assumption, not a limit: a longer request
fits in the same room the call budget leaves.

Without an adapter the prompt lists every tool (~2,300 tokens) and up to ``max_steps`` tool
results are fed back, which no schema bounds: no bound (None), the profile's context stands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent import prompt
from edge_agent.skills.home.retrieve import DEFAULT_K, describe

if TYPE_CHECKING:
    from edge_agent.settings import Settings
    from edge_agent.skills.home.inventory import Inventory

TEMPLATE_TOKENS = 32  # SmolLM2's ChatML spends 11; Llama 3 and Gemma templates about 20
REQUEST_TOKENS = 128  # a spoken command with room to spare (the HA test split's longest: 17)
STATE_SLACK = 16  # a simulated device's state may grow after the bound is taken ("21.5 °C")
HA_LINE_BYTES = 300  # a real home's line, unread at plan time: HA caps a state at 255 chars


def turn_tokens(settings: Settings, adapted: bool) -> int | None:
    """The home skill's bound on this device's home (its `Skill.context_bound`)."""
    if not adapted:
        return None
    if settings.home_backend == "home_assistant":
        block = _block_header_bytes(settings.area or "unknown") + DEFAULT_K * HA_LINE_BYTES
        return _fixed_tokens() + block
    return turn_bound(_device_inventory(settings), settings.area)


def turn_bound(inventory: Inventory, area: str | None = None) -> int:
    """Tokens one adapted home turn can take with this home's devices (see the module doc)."""
    return _fixed_tokens() + context_block_bytes(inventory, area)


def context_block_bytes(inventory: Inventory, area: str | None = None) -> int:
    """The most bytes `retrieve.context_block` can write for this home."""
    lines = sorted((_bytes(describe(e, inventory)) for e in inventory.entities), reverse=True)
    top = lines[:DEFAULT_K] or [_bytes("- none match")]
    areas = [a.name for a in inventory.areas] + [area or "unknown"]
    longest_area = max(areas, key=_bytes)
    return _block_header_bytes(longest_area) + sum(n + 1 + STATE_SLACK for n in top)


def _fixed_tokens() -> int:
    """Everything but the context block: template, system prompt, request, call budget."""
    from edge_agent.skills.home.inventory import Inventory
    from edge_agent.skills.home.toolset import home_toolset

    # the tools' schemas are the same for any home: the default one builds them
    tools = home_toolset(inventory=Inventory(entities=[]))
    system = prompt.system_prompt(tools, adapted=True)
    call = prompt.token_budget(prompt.output_schema(tools))
    return TEMPLATE_TOKENS + _bytes(system) + REQUEST_TOKENS + call


def _device_inventory(settings: Settings) -> Inventory:
    from edge_agent.skills.home.inventory import Inventory, load_inventory

    if settings.home_inventory:
        return load_inventory(settings.home_inventory)
    return Inventory.default()


def _block_header_bytes(area: str) -> int:
    return _bytes(f"Speaker area: {area}\nDevices:\n")


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))
