"""The ``home`` skill: Home Assistant's intents on the device's home (simulated by default)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

from edge_agent.skills.skill import CalibrationRow, Skill

if TYPE_CHECKING:
    from edge_agent.settings import Settings
    from edge_agent.skills.home.dataset import Row
    from edge_agent.tools import Toolset
    from edge_agent.types import ToolCall


def _toolset(settings: Settings) -> Toolset:
    from edge_agent.skills.home.toolset import home_toolset

    # the simulated home keeps its state across runs, beside the device's other data
    return home_toolset(state_path=settings.data_dir / "home_state.json")


def _keep(settings: Settings) -> set[str]:
    from edge_agent.skills.home.inventory import Inventory

    return Inventory.default().keep_words()


def calibration_rows(rows: Iterable[Row]) -> list[CalibrationRow]:
    """HA rows as calibration rows: each in its own home, right when the call matches the
    row's slots (any of a slot's listed alternatives)."""
    return [
        CalibrationRow(
            row.id,
            row.sentence,
            partial(_row_toolset, row),
            partial(_right, row),
            area=row.speaker_area,
        )
        for row in rows
    ]


def _validation_rows(limit: int | None) -> list[CalibrationRow]:
    from edge_agent.skills.home import dataset

    # the validation split only: the test split stays unseen by what is picked on it
    return calibration_rows(dataset.load_split("validation")[:limit])


def _row_toolset(row: Row) -> Toolset:
    from edge_agent.skills.home.toolset import home_toolset

    return home_toolset(inventory=row.inventory())


def _right(row: Row, call: ToolCall | None) -> bool:
    from edge_agent.skills.home.score import call_matches

    return call_matches(row.slots, row.intent, call)


skill = Skill(
    "home",
    toolset=_toolset,
    description="Home Assistant intents: lights, covers, climate, …",
    keep=_keep,
    calibration_rows=_validation_rows,
)
