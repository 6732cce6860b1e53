"""Synthetic homes: seedable, well-formed, varied, and split into train and held-out homes."""

from collections import Counter

from edge_agent.skills.home.homes import STYLES, home, home_ids
from edge_agent.skills.home.toolset import DOMAINS


def test_same_id_same_home_and_other_ids_other_homes():
    assert home("train-5") == home("train-5")
    assert home("train-5") != home("train-6")


def test_train_and_heldout_homes_never_overlap():
    train, held = set(home_ids("train")), set(home_ids("heldout"))
    assert train and held and not train & held


def test_every_home_is_well_formed():
    for home_id in home_ids("heldout"):
        inventory = home(home_id)
        names = [e.name for e in inventory.entities]
        assert len(names) == len(set(names)), home_id  # one name, one device: no ambiguity
        assert len({e.id for e in inventory.entities}) == len(names)
        areas = {a.id for a in inventory.areas}
        assert all(e.area in areas for e in inventory.entities if e.area), home_id
        floors = {f.id for f in inventory.floors}
        assert all(a.floor in floors for a in inventory.areas if a.floor), home_id


def test_homes_cover_every_style_and_every_domain_the_toolset_has():
    inventories = [home(i) for i in home_ids("train")]
    domains = {e.domain for inv in inventories for e in inv.entities}
    assert domains == set(DOMAINS)
    shapes = Counter((len(inv.floors), len(inv.areas) > 6) for inv in inventories)
    assert len(shapes) >= 4 and len(STYLES) >= 4
    assert any(a.aliases for inv in inventories for a in inv.areas)
    assert any(e.aliases for inv in inventories for e in inv.entities)
