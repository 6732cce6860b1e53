"""`edge-agent adapters`: what each skill runs, pulling signed releases, switching, rollback."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from edge_agent.cli._common import echo_json, json_option, model_options, plan_for, settings_from


@click.group()
def adapters() -> None:
    """LoRA adapters: shipped, installed on this device, and available from the host."""


@adapters.command("list")
@click.option("--no-host", is_flag=True, help="do not ask the enrolled host what it offers")
@model_options
@json_option
def list_cmd(no_host: bool, as_json: bool, **flags: Any) -> None:
    """Shipped, installed (with status) and, when the host answers, available adapters."""
    from edge_agent.adapters.installed import InstalledAdapters

    settings = settings_from(**flags)
    identity = _identity(settings)
    installed = InstalledAdapters(settings.adapters_dir)
    data = {
        "shipped": _shipped_rows(identity, installed),
        "installed": [_installed_row(a) for a in installed.listing()],
        **_available(settings, identity, installed, ask=not no_host),
    }
    if installed.recovered:
        data["recovered_state"] = str(installed.recovered)
    if as_json:
        echo_json(data)
        return
    _print_listing(data)


@adapters.command("pull")
@click.argument("skill", required=False)
@model_options
@json_option
def pull(skill: str | None, as_json: bool, **flags: Any) -> None:
    """Download new releases from the host, run their canary on this device, and activate
    those that pass (all skills, or SKILL)."""
    from edge_agent.adapters.canary import update_from_host
    from edge_agent.runtime import open_runtime

    with open_runtime(settings_from(**flags)) as rt:
        report = update_from_host(rt, skills=[skill] if skill else None)
    if as_json:
        echo_json(report.to_dict())
    for outcome in [] if as_json else report.outcomes:
        click.echo(f"{outcome.release}: {outcome.action}: {outcome.reason}")
    if not (as_json or report.outcomes or report.error):
        click.echo("nothing new for this device")
    _raise_first_failure(report)


@adapters.command("use")
@click.argument("name")
@click.option("--force", is_flag=True, help="use it even though its canary rejected it")
def use(name: str, force: bool) -> None:
    """Run adapter NAME for its skill from the next start on (a shipped adapter's name goes
    back to it)."""
    from edge_agent.adapters.installed import InstalledAdapters
    from edge_agent.adapters.shipped import shipped_adapters

    installed = InstalledAdapters(settings_from().adapters_dir)
    shipped = next((a for a in shipped_adapters() if a.name == name), None)
    if shipped is not None:
        installed.use(shipped.skill, None)
        click.echo(f"{shipped.skill} runs the shipped adapter {name} from the next start on")
        return
    entry = installed.use(installed.get(name).skill, name, force=force)
    assert entry is not None
    click.echo(f"{entry.skill} runs {entry.name} from the next start on")


@adapters.command("rollback")
@click.argument("skill")
def rollback(skill: str) -> None:
    """Reject SKILL's active adapter and go back to the last known good one."""
    from edge_agent.adapters.installed import InstalledAdapters

    installed = InstalledAdapters(settings_from().adapters_dir)
    now = installed.rollback(skill, reason="rolled back by the user")
    click.echo(f"{skill} now runs {now.name if now else _baseline(skill)}")


# --- helpers --------------------------------------------------------------------------------


def _identity(settings: Any) -> Any:
    """The base model this device runs, read from its file's header; None when unknown."""
    from pathlib import Path

    from edge_agent.errors import EdgeAgentError
    from edge_agent.models.gguf import identity_of, read_header

    try:
        plan, store = plan_for(settings)
        entry = plan.entry
        path = Path(entry.source.path or "") if entry.source.kind == "path" else None
        path = path or store.local_path(entry)
        return identity_of(read_header(path)) if path else None
    except EdgeAgentError as exc:  # the listing still shows what is installed, without fits
        click.echo(f"warning: the base model's identity is unknown: {exc}", err=True)
        return None


def _shipped_rows(identity: Any, installed: Any) -> list[dict[str, Any]]:
    from edge_agent.adapters.shipped import shipped_adapters

    return [
        {
            "name": a.name,
            "skill": a.skill,
            "fits": a.fits(identity),
            "status": "active" if installed.active(a.skill) is None else "known_good",
        }
        for a in shipped_adapters()
    ]


def _installed_row(a: Any) -> dict[str, Any]:
    return {
        "name": a.name,
        "skill": a.skill,
        "version": a.release.version,
        "status": a.status,
        "reason": a.reason,
        "installed_at": datetime.fromtimestamp(a.installed_at).isoformat(timespec="seconds"),
        "canary": a.canary,
    }


def _available(settings: Any, identity: Any, installed: Any, *, ask: bool) -> dict[str, Any]:
    """What the host offers, or why it was not asked / did not answer."""
    from edge_agent.adapters.canary import close_source, open_source
    from edge_agent.errors import EdgeAgentError

    if not ask or settings.is_offline or not settings.enrollment_path.exists():
        return {"available": None, "host": "not asked (offline, --no-host, or not enrolled)"}
    try:
        source = open_source(settings, identity)
        try:
            releases = source.refresh()
        finally:
            close_source(source)
    except EdgeAgentError as exc:
        return {"available": None, "host": str(exc)}
    ours = identity.as_dict() if identity is not None else None
    names = {a.name for a in installed.listing()}
    rows = [_release_row(r, ours, names) for r in releases]
    return {"available": rows, "host": "ok"}


def _release_row(release: Any, ours: Any, installed: set[str]) -> dict[str, Any]:
    return {
        "name": release.name,
        "skill": release.skill,
        "version": release.version,
        "fits": release.base_identity == ours,
        "installed": release.name in installed,
    }


def _print_listing(data: dict[str, Any]) -> None:
    for row in data["shipped"]:
        fits = "" if row["fits"] else "  (not for this model)"
        click.echo(f"shipped    {row['skill']:<8} {row['name']:<24} {row['status']}{fits}")
    for row in data["installed"]:
        why = f"  ({row['reason']})" if row["reason"] else ""
        click.echo(f"installed  {row['skill']:<8} {row['name']:<24} {row['status']}{why}")
    for row in data["available"] or []:
        mark = "installed" if row["installed"] else ("new" if row["fits"] else "other model")
        click.echo(f"available  {row['skill']:<8} {row['name']:<24} {mark}")
    if data["available"] is None:
        click.echo(f"host: {data['host']}", err=True)
    if data.get("recovered_state"):
        click.echo(f"the damaged adapter state was moved to {data['recovered_state']}", err=True)


def _baseline(skill: str) -> str:
    from edge_agent.adapters.shipped import shipped_adapters

    shipped = next((a.name for a in shipped_adapters() if a.skill == skill), None)
    return f"the shipped adapter {shipped}" if shipped else "no adapter (the base model)"


def _raise_first_failure(report: Any) -> None:
    """A pull that could not reach the host, or whose release failed, exits non-zero."""
    from edge_agent.errors import AdapterRejectedError

    if report.error is not None:
        raise report.error
    for outcome in report.outcomes:
        if outcome.error is not None:
            raise outcome.error
        if outcome.action == "rejected":
            raise AdapterRejectedError(
                f"{outcome.release} was rejected by its canary ({outcome.reason}); the last "
                "known good adapter stays"
            )
