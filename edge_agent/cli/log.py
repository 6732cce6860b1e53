"""`edge-agent log`: read, export, check and re-key the sealed interaction log."""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

import click

from edge_agent.cli._common import echo_json, json_option

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def since_option(func: Any) -> Any:
    return click.option(
        "--since",
        default=None,
        help="only records after this: 2025-06-01, 2025-06-01T08:00, 7d, 12h",
    )(func)


def parse_since(value: str | None) -> float | None:
    if value is None:
        return None
    match = _RELATIVE.match(value.strip())
    if match:
        return time.time() - float(match[1]) * _UNIT_S[match[2]]
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: use an ISO date/time or 30m, 12h, 7d, 2w") from exc


def log_config() -> Any:
    """The log's config from the settings; asks for the passphrase on a terminal if needed."""
    from edge_agent.logstore import LogConfig
    from edge_agent.logstore.config import recorded_key_source
    from edge_agent.settings import load_settings

    config = LogConfig.from_settings(load_settings())
    source = recorded_key_source(config.path) or config.key_source
    if source == "passphrase" and config.passphrase is None and sys.stdin.isatty():
        first_use = not config.path.exists()
        passphrase = click.prompt("log passphrase", hide_input=True, confirmation_prompt=first_use)
        config = replace(config, passphrase=passphrase)
    return config


def open_store() -> Any:
    from edge_agent.logstore import LogStore

    return LogStore(log_config())


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


@click.group()
def log() -> None:
    """The sealed interaction log: every agent turn, encrypted on this device."""


@log.command("list")
@since_option
@click.option("--limit", type=int, default=50, show_default=True, help="the newest N records")
@json_option
def log_list(since: str | None, limit: int, as_json: bool) -> None:
    """Recent turns: time, route, outcome and the request (decrypted)."""
    with open_store() as store:
        rows = [_list_row(store, r) for r in store.rows(since=parse_since(since), limit=limit,
                                                        newest=True)]  # fmt: skip
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        synced = "synced" if r["synced"] else "local"
        click.echo(f"{r['id']}  {_when(r['ts'])}  {r['route']:<8} {r['outcome']:<18} "
                   f"{synced:<6}  {r['request']}")  # fmt: skip


def _list_row(store: Any, row: dict[str, Any]) -> dict[str, Any]:
    from edge_agent.logstore.seal import SealError

    out = {k: v for k, v in row.items() if k not in ("body", "feedback")}
    try:
        out["request"] = store.decode(row).result.request
    except SealError as exc:
        out["request"] = f"<unreadable: {exc}>"
    return out


@log.command("show")
@click.argument("record_id")
@json_option
def show(record_id: str, as_json: bool) -> None:
    """One turn in full: request, tool calls, answer, the messages the model saw."""
    with open_store() as store:
        item = store.get(record_id)
    if as_json:
        echo_json(item.model_dump(mode="json"))
        return
    result = item.result
    click.echo(f"{result.id}  {_when(item.recorded_at)}  {result.route}  {result.outcome}")
    click.echo(f"model: {result.model}  adapter: {result.adapter or '-'}  "
               f"latency: {result.latency_ms:.0f} ms")  # fmt: skip
    click.echo(f"request: {result.request}")
    for outcome in result.tool_calls:
        args = json.dumps(outcome.call.arguments)
        click.echo(f"→ {outcome.call.name}({args}) [{outcome.status}] "
                   f"{outcome.error or json.dumps(outcome.result, default=str)}")  # fmt: skip
    click.echo(f"answer: {result.answer or result.error or ''}")
    if item.feedback:
        click.echo(f"feedback: {item.feedback.rating or ''} {item.feedback.comment or ''}")
    for message in item.messages:
        click.echo(f"  [{message.role}] {message.content}")


@log.command("export")
@since_option
@click.option("--output", "-o", type=click.File("w"), default="-", help="file (default stdout)")
@json_option
def export(since: str | None, output: Any, as_json: bool) -> None:
    """Decrypted records as JSON Lines (--json: one JSON array). Bad ones are skipped and
    counted on stderr; `log verify` names them."""
    bad: list[str] = []
    with open_store() as store:
        items = store.interactions(since=parse_since(since), on_bad=lambda i, _: bad.append(i))
        dicts = (item.model_dump(mode="json") for item in items)
        if as_json:
            json.dump(list(dicts), output, indent=2)
            output.write("\n")
        else:
            for d in dicts:
                output.write(json.dumps(d) + "\n")
    if bad:
        click.echo(f"skipped {len(bad)} unreadable record(s): run `edge-agent log verify`",
                   err=True)  # fmt: skip


@log.command("status")
@json_option
def status(as_json: bool) -> None:
    """Counts, size against the budget, periods, unsynced, drops and evictions."""
    with open_store() as store:
        st = store.status()
    if as_json:
        echo_json(asdict(st))
        return
    budget = f"{st.budget_bytes / 2**20:.0f} MiB" if st.budget_bytes else "none"
    click.echo(f"log: {st.path}  ({st.key_source} key {st.master_kid})")
    click.echo(f"records: {st.records}  unsynced: {st.unsynced}")
    click.echo(f"size: {st.size_bytes / 2**20:.1f} MiB on disk, "
               f"{st.used_bytes / 2**20:.1f} MiB used, budget {budget}")  # fmt: skip
    for name, value in st.counters.items():
        click.echo(f"{name.replace('_', ' ')}: {value}")
    for p in st.periods:
        state = "shredded" if p.shredded else f"{p.records} records, {p.unsynced} unsynced"
        click.echo(f"  period {p.period}  key {p.key_id}  {state}")


@log.command("verify")
@json_option
def verify(as_json: bool) -> None:
    """Check every record and the database; list the bad ones by id (exit 8 if any)."""
    from edge_agent.errors import LogIntegrityError
    from edge_agent.logstore import verify_log

    report = verify_log(log_config())
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(f"checked {report.checked}: {report.ok} ok, {len(report.bad)} bad, "
                   f"{report.shredded} shredded (pending purge)")  # fmt: skip
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        for bad in report.bad:
            click.echo(f"bad: {bad.id}: {bad.reason}")
    if not report.clean:
        raise LogIntegrityError(
            f"{len(report.bad)} bad record(s), {len(report.problems)} problem(s) in the log"
        )


@log.command("rotate-key")
def rotate_key() -> None:
    """A new master key re-wraps every data key; no record is lost or re-encrypted."""
    from edge_agent.logstore import PassphraseKeySource

    with open_store() as store:
        new_source = None
        if store.source.name == "passphrase":
            new = click.prompt("new log passphrase", hide_input=True, confirmation_prompt=True)
            new_source = PassphraseKeySource(new, n=store.config.scrypt_n)
        done = store.rotate_key(new_source)
    click.echo(f"re-wrapped {done.rewrapped} data key(s) under master key {done.master_kid}")
    if done.skipped:
        click.echo(f"left {len(done.skipped)} damaged key(s) as they were: "
                   f"{', '.join(done.skipped)}", err=True)  # fmt: skip


@log.command("feedback")
@click.argument("record_id")
@click.argument("rating", type=click.Choice(["up", "down"]))
@click.option("--comment", default=None, help="what was wrong or right (sealed)")
def feedback(record_id: str, rating: str, comment: str | None) -> None:
    """Rate a turn; the flywheel uses ratings to pick what to learn from."""
    with open_store() as store:
        store.set_feedback(record_id, rating, comment)
    click.echo(f"{record_id}: {rating}")
