"""`edge-agent adapters`: what each skill runs, pulling signed releases, switching, rollback."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from edge_agent.cli._common import echo_json, json_option, model_options, plan_for, settings_from


@click.group()
def adapters() -> None:
    """LoRA adapters: shipped, installed on this device, and available from the host."""


def skill_option(func: Any) -> Any:
    return click.option("--skill", "skill_flag", default=None, help="only this skill")(func)


@adapters.command("list")
@click.option("--no-host", is_flag=True, help="do not ask the enrolled host what it offers")
@skill_option
@model_options
@json_option
def list_cmd(no_host: bool, skill_flag: str | None, as_json: bool, **flags: Any) -> None:
    """What each skill runs, then shipped, installed (with status) and, when the host
    answers, available adapters (all skills, or --skill)."""
    from edge_agent.adapters.installed import InstalledAdapters

    settings = settings_from(**flags)
    identity = _identity(settings)
    installed = InstalledAdapters(settings.adapters_dir)
    data = {
        "shipped": _shipped_rows(identity, installed),
        "installed": [_installed_row(a) for a in installed.listing()],
        **_available(settings, identity, installed, ask=not no_host),
    }
    data = _only(data, skill_flag)
    data["skills"] = _skill_rows(settings, identity, installed, data, skill_flag)
    if installed.recovered:
        data["recovered_state"] = str(installed.recovered)
    if as_json:
        echo_json(data)
        return
    _print_listing(data)


@adapters.command("pull")
@click.argument("skill", required=False)
@skill_option
@model_options
@json_option
def pull(skill: str | None, skill_flag: str | None, as_json: bool, **flags: Any) -> None:
    """Download new releases for the skills this device runs (`tools` and every
    [skills.NAME]; or only SKILL), run each one's canary on this device, and activate those
    that pass; releases of other skills are listed with why they were not pulled."""
    from edge_agent.adapters.canary import update_from_host
    from edge_agent.runtime import open_runtime

    skill = _one_skill(skill, skill_flag)
    with open_runtime(settings_from(**flags)) as rt:
        report = update_from_host(rt, skills=[skill] if skill else None)
    if as_json:
        echo_json(report.to_dict())
    for line in [] if as_json else report.skipped:
        click.echo(line)
    for outcome in [] if as_json else report.outcomes:
        click.echo(f"{outcome.release}: {outcome.action}: {outcome.reason}")
    if not (as_json or report.outcomes or report.error):
        click.echo("nothing new for this device")
    _raise_first_failure(report)


@adapters.command("use")
@click.argument("name")
@skill_option
@click.option("--force", is_flag=True, help="use it even though its canary rejected it")
def use(name: str, skill_flag: str | None, force: bool) -> None:
    """Run adapter NAME for its skill (--skill: check it is that skill's) from the next start
    on; a shipped adapter's name goes back to it."""
    from edge_agent.adapters.installed import InstalledAdapters
    from edge_agent.adapters.shipped import shipped_adapters
    from edge_agent.errors import AdapterError

    installed = InstalledAdapters(settings_from().adapters_dir)
    shipped = next((a for a in shipped_adapters() if a.name == name), None)
    if shipped is not None:
        if skill_flag not in (None, shipped.skill):
            raise AdapterError(
                f"{name} is the shipped adapter of {shipped.skill}, not {skill_flag}"
            )
        installed.use(shipped.skill, None)
        click.echo(f"{shipped.skill} runs the shipped adapter {name} from the next start on")
        return
    entry = installed.use(skill_flag or installed.get(name).skill, name, force=force)
    assert entry is not None
    click.echo(f"{entry.skill} runs {entry.name} from the next start on")


@adapters.command("rollback")
@click.argument("skill", required=False)
@skill_option
def rollback(skill: str | None, skill_flag: str | None) -> None:
    """Reject the skill's active adapter and go back to its last known good one (SKILL or
    --skill; may be left out on a device that runs one skill)."""
    from edge_agent.adapters.installed import InstalledAdapters

    settings = settings_from()
    chosen = _one_skill(skill, skill_flag) or _the_only_skill(settings)
    installed = InstalledAdapters(settings.adapters_dir)
    now = installed.rollback(chosen, reason="rolled back by the user")
    click.echo(f"{chosen} now runs {now.name if now else _baseline(chosen)}")


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


def _only(data: dict[str, Any], skill: str | None) -> dict[str, Any]:
    """The listing's rows of one skill (None: all)."""
    if skill is None:
        return data
    keep = {k: [r for r in data[k] if r["skill"] == skill] for k in ("shipped", "installed")}
    if data["available"] is not None:
        keep["available"] = [r for r in data["available"] if r["skill"] == skill]
    return data | keep


def _skill_rows(
    settings: Any, identity: Any, installed: Any, data: dict[str, Any], skill: str | None
) -> list[dict[str, Any]]:
    """Per skill: the adapter its requests run now, and whether this device runs it."""
    from edge_agent.skills.registry import device_skills

    runs_here = device_skills(settings)
    listed = [r["skill"] for k in ("shipped", "installed") for r in data[k]]
    listed += [r["skill"] for r in data["available"] or []]
    names = [skill] if skill else list(dict.fromkeys([*runs_here, *sorted(listed)]))
    rows = []
    for name in names:
        adapter, source = _runs(settings, identity, installed, name)
        rows.append({"skill": name, "runs": adapter, "from": source, "device": name in runs_here})
    return rows


def _runs(settings: Any, identity: Any, installed: Any, skill: str) -> tuple[str | None, str]:
    """What the runtime picks for the skill (`Runtime.use_skill_adapter`): the installed
    active adapter made for this base, else the shipped one, else none."""
    from edge_agent.adapters.shipped import adapter_for

    if not settings.adapters:
        return None, "adapters are off"
    entry = installed.active(skill)
    fits = entry is not None and identity is not None
    if fits and entry.release.base_identity == identity.as_dict():
        return entry.name, "installed"
    shipped = adapter_for(skill, identity)
    return (shipped.name, "shipped") if shipped else (None, "the base model")


def _print_listing(data: dict[str, Any]) -> None:
    rows = [*data["skills"], *data["shipped"], *data["installed"], *(data["available"] or [])]
    w = max([8, *(len(r["skill"]) for r in rows)])
    for row in data["skills"]:
        runs = f"runs {row['runs']} ({row['from']})" if row["runs"] else f"runs {row['from']}"
        where = "" if row["device"] else "  (not run by this device)"
        click.echo(f"skill      {row['skill']:<{w}} {runs}{where}")
    for row in data["shipped"]:
        fits = "" if row["fits"] else "  (not for this model)"
        click.echo(f"shipped    {row['skill']:<{w}} {row['name']:<24} {row['status']}{fits}")
    for row in data["installed"]:
        why = f"  ({row['reason']})" if row["reason"] else ""
        click.echo(f"installed  {row['skill']:<{w}} {row['name']:<24} {row['status']}{why}")
    for row in data["available"] or []:
        mark = "installed" if row["installed"] else ("new" if row["fits"] else "other model")
        click.echo(f"available  {row['skill']:<{w}} {row['name']:<24} {mark}")
    if data["available"] is None:
        click.echo(f"host: {data['host']}", err=True)
    if data.get("recovered_state"):
        click.echo(f"the damaged adapter state was moved to {data['recovered_state']}", err=True)


def _one_skill(argument: str | None, flag: str | None) -> str | None:
    """SKILL and --skill say the same thing; both given, they must agree."""
    from edge_agent.errors import ConfigError

    if argument and flag and argument != flag:
        raise ConfigError(f"SKILL is {argument} but --skill is {flag}: give one of them")
    return argument or flag


def _the_only_skill(settings: Any) -> str:
    from edge_agent.errors import ConfigError
    from edge_agent.skills.registry import device_skills

    names = device_skills(settings)
    if len(names) != 1:
        runs = ", ".join(names) or "none"
        raise ConfigError(f"name the skill: --skill NAME (this device runs {runs})")
    return names[0]


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
