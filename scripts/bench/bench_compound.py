"""Compound home commands, state-scored, with the real default model and the shipped home
adapter: the agent without the split hook (one call per request) and with it.

    .venv/bin/python scripts/bench/bench_compound.py [--limit N]

A command counts when every entity it names ends in the expected state (all kitchen lights
start as the row says: an area's lights start together)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edge_agent.runtime import open_runtime
from edge_agent.settings import load_settings
from edge_agent.skills.home.inventory import Inventory
from edge_agent.skills.home.simulated import SimulatedHome
from edge_agent.skills.home.toolset import home_toolset

DATA = Path(__file__).parents[2] / "tests/skills/home/data/compound_commands.json"


def seeded(start: dict[str, str]) -> SimulatedHome:
    inventory = Inventory.default().model_copy(deep=True)
    for entity_id, state in start.items():
        entity = inventory.entity(entity_id)
        assert entity is not None, entity_id
        for e in inventory.entities:  # an area's lights start together
            if e.domain == entity.domain == "light" and e.area == entity.area:
                e.state = state
        entity.state = state
    return SimulatedHome(inventory)


def run(rt, row: dict, split: bool) -> bool:
    home = seeded(row["start"])
    tools = home_toolset(backend=home)
    if not split:
        tools.split = None
    result = rt.agent(tools).run(row["request"], confirmed=True)
    got = {k: home.inventory.entity(k).state for k in row["expect"]}
    return got == row["expect"], result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    rows = json.loads(DATA.read_text())[: args.limit]
    rt = open_runtime(load_settings(profile="generic-x86-64", threads=2, log_enabled=False))
    try:
        print("adapter:", rt.adapter_of("home"))
        for split in (False, True):
            t0, ok = time.perf_counter(), 0
            for row in rows:
                right, result = run(rt, row, split)
                ok += right
                calls = [(c.call.name, c.call.arguments, c.status) for c in result.tool_calls]
                print(
                    f"{'split' if split else 'whole'} {'OK ' if right else 'BAD'} "
                    f"{row['request']!r} {calls}"
                )
            secs = time.perf_counter() - t0
            print(
                f"== split={split}: {ok}/{len(rows)} state-scored, {secs / len(rows):.2f} s/request"
            )
    finally:
        rt.close()


if __name__ == "__main__":
    main()
