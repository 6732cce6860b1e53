"""`edge-agent anonymize`: show exactly what would leave the device for a text or JSON file."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import IO

import click

from edge_agent.cli._common import echo_json, settings_from


@click.command()
@click.argument("file", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--json", "as_json", is_flag=True, help="FILE is JSON: scrub every string value")
@click.option("--findings", is_flag=True, help="list what was found, with its tag, instead")
@click.option(
    "--inventory",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="home inventory whose names stay (default: the vendored Home Assistant fixtures)",
)
def anonymize(file: IO[str], as_json: bool, findings: bool, inventory: Path | None) -> None:
    """Scrub personal data from FILE (default: stdin) and print the result.

    Names, emails, phone numbers, cards, IBANs, addresses and secrets become tags like
    <PERSON_3f9a1c>, keyed with this device's secret: what is printed is what would be synced."""
    from edge_agent.anonymize import Anonymizer, device_secret
    from edge_agent.skills.home.inventory import Inventory, load_inventory

    settings = settings_from()
    home = load_inventory(inventory) if inventory else Inventory.default()
    anonymizer = Anonymizer(device_secret(settings.config_dir), home.keep_words())
    text = file.read()
    if findings:
        found = anonymizer.findings(text)
        echo_json([asdict(f) | {"tag": anonymizer.tag(f.type, f.value)} for f in found])
    elif as_json:
        echo_json(anonymizer.scrub_obj(_parse(text)))
    else:
        sys.stdout.write(anonymizer.scrub(text))


def _parse(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="FILE") from exc
