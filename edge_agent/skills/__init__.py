"""Skills: the contract (`skill.Skill`), the registry, and the built-in ones — home, system,
bfcl — one module or package each, all the same shape.

Each built-in exposes ``skill`` (a `Skill`) and ``toolset()`` (its toolset with defaults); the
registry imports a skill's module only when it is first asked for, so ``home`` reads its
intents and inventory only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_agent.settings import Settings


def keep_words(settings: Settings | None = None) -> set[str]:
    """Words the device's skills need readable in what leaves it (the anonymizer keeps them):
    the union of each skill's ``keep`` (the names in the home, for ``home``). A skill that
    cannot be built right now contributes nothing."""
    from edge_agent.errors import EdgeAgentError
    from edge_agent.settings import load_settings
    from edge_agent.skills.registry import device_skills, get_skill

    settings = settings or load_settings()
    words: set[str] = set()
    for name in device_skills(settings):
        try:
            skill = get_skill(name, settings)
        except EdgeAgentError:
            continue
        if skill.keep is not None:
            words |= skill.keep(settings)
    return words
