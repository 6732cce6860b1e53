"""`edge-agent anonymize`: show exactly what would leave the device, through the code sync uses:
the device's anonymizer with the skills' keep words, and for logged turns `redact` and the
wire encoding."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import IO, Any, cast

import click

from edge_agent.cli._common import echo_json, settings_from


@click.command()
@click.argument("file", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--json", "as_json", is_flag=True, help="FILE is JSON: scrub every string value")
@click.option("--findings", is_flag=True, help="list what was found, with its tag, instead")
def anonymize(file: IO[str], as_json: bool, findings: bool) -> None:
    """Scrub personal data from FILE (default: stdin) and print the result.

    Names, emails, phone numbers, cards, IBANs, addresses and secrets become tags like
    <PERSON_3f9a1c>, keyed with this device's secret. `edge-agent log export` output (JSON
    Lines, or the array of --json) prints one line per turn: the exact bytes `edge-agent sync`
    sends for it (a batch is {"protocol":1,"records":[those lines, comma-separated]})."""
    from edge_agent.cli.sync import device_scrubber

    scrubber = device_scrubber(settings_from())
    text = file.read()
    records = None if findings else _records(text)
    if records is not None:
        _write_records(records, scrubber)
    elif findings:
        _echo_findings(scrubber, text)
    elif as_json:
        echo_json(scrubber.scrub_obj(_parse(text)))
    else:
        sys.stdout.write(scrubber.scrub(text))


def _write_records(records: list[Any], scrubber: Any) -> None:
    from edge_agent.sync.redact import encoded

    out = b"".join(encoded(item, scrubber) + b"\n" for item in records)
    sys.stdout.flush()
    sys.stdout.buffer.write(out)  # bytes: what is sent, whatever the terminal's encoding
    sys.stdout.buffer.flush()


def _echo_findings(scrubber: Any, text: str) -> None:
    from edge_agent.anonymize import Anonymizer

    anonymizer = cast(Anonymizer, scrubber)
    found = anonymizer.findings(text)
    echo_json([asdict(f) | {"tag": anonymizer.tag(f.type, f.value)} for f in found])


def _records(text: str) -> list[Any] | None:
    """The turns in `text` when it is `edge-agent log export` output (JSON Lines, the JSON
    array of `--json`, or one turn as `log show --json` prints it); None for anything else."""
    docs = _documents(text)
    if len(docs) == 1 and isinstance(docs[0], list):
        docs = docs[0]
    if not docs or not all(_looks_logged(d) for d in docs):
        return None
    return _validated(docs)


def _validated(docs: list[Any]) -> list[Any]:
    from pydantic import ValidationError

    from edge_agent.errors import LogError
    from edge_agent.types import Interaction

    items = []
    for number, doc in enumerate(docs, 1):
        try:
            items.append(Interaction.model_validate(doc))
        except ValidationError as exc:
            where = exc.errors()[0]
            field = ".".join(str(p) for p in where["loc"])
            raise LogError(
                f"record {number} is not a logged interaction ({field}: {where['msg']}); "
                "give `edge-agent log export` output"
            ) from None
    return items


def _looks_logged(doc: Any) -> bool:
    return (
        isinstance(doc, dict) and isinstance(doc.get("result"), dict) and "request" in doc["result"]
    )


def _documents(text: str) -> list[Any]:
    """`text` as one JSON document, or as JSON Lines; empty when it is neither."""
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError:
        return []


def _parse(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="FILE") from exc
