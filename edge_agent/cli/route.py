"""`edge-agent route`: calibrate the router per skill; report how it routes; late labels; keys."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edge_agent.cli._common import echo_json, json_option, model_options, settings_from
from edge_agent.cli.log import parse_since, since_option


@click.group()
def route() -> None:
    """Routing between the local model and a remote one (remote_url, remote_model)."""


@route.command("calibrate")
@model_options
@click.option("--skill", default=None, help="the skill to calibrate [default: tools]")
@click.option(
    "--from-log",
    is_flag=True,
    help="from the log: escalated turns of the skill with the local model's shadow attempt "
    "beside the teacher's call (any skill; without it, the skill's own calibration set)",
)
@click.option(
    "--target",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.97,
    show_default=True,
    help="overall accuracy to keep (escalated requests counted right)",
)
@click.option("--limit", type=int, default=None, help="first N rows of the calibration set")
@json_option
def calibrate(
    target: float, limit: int | None, skill: str | None, from_log: bool, as_json: bool,
    **flags: Any,
) -> None:  # fmt: skip
    """Pick the skill's router thresholds: those that serve the most requests locally at the
    target accuracy. On the skill's own calibration set (home: the HA validation split,
    never the test split): the local model's attempt at each row and whether it was right.
    With --from-log, on the skill's teacher-labelled shadow attempts in this device's log,
    made by the adapter the skill runs now: right when the skill's scorer says the attempt
    matches the teacher. Each skill's thresholds are stored apart; the router uses them for
    that skill's turns."""
    settings = settings_from(**flags)
    name = skill or settings.tools
    if from_log:
        calibration, pairs = _from_log(settings, name, target)
    else:
        calibration, pairs = _on_calibration_set(settings, name, target, limit), None
    calibration.save(settings.route_path)
    summary = _calibration_summary(calibration) | {"file": str(settings.route_path)}
    if pairs is not None:
        summary["pairs"] = {"used": pairs.used, "skipped": pairs.skipped,
                            "other_adapter": pairs.other_attempts,
                            "unusable": pairs.unusable}  # fmt: skip
    if as_json:
        echo_json(summary)
        return
    _print_calibration(summary)


def _on_calibration_set(settings: Any, name: str, target: float, limit: int | None) -> Any:
    """The calibration of `name` on its own rows, attempted by the local model now."""
    from edge_agent.errors import ConfigError
    from edge_agent.routing.calibration import calibration_for, collect
    from edge_agent.routing.router import Router
    from edge_agent.runtime import open_runtime
    from edge_agent.skills.registry import get_skill

    rows_of = get_skill(name, settings).calibration_rows
    if rows_of is None:
        raise ConfigError(f"skill {name!r} has no calibration set of its own: calibrate it on "
                          "its teacher-labelled turns in the log with --from-log")  # fmt: skip
    rows = rows_of(limit)
    with open_runtime(settings) as rt:
        adapter, model = rt.adapter_of(name), rt.model_name
        # The distance signal, where the adapter's clusters and embedder are on the device.
        signals = Router(None, clusters=getattr(rt, "clusters_for", None))
        with click.progressbar(length=len(rows), label="calibration rows", file=sys.stderr) as bar:
            records = collect(
                rt.skill_backend(name), rows, adapter=adapter, model_name=model,
                router=signals, progress=lambda _: bar.update(1),
            )  # fmt: skip
    return calibration_for(records, target, model=model, adapter=adapter, skill=name)


def _from_log(settings: Any, name: str, target: float) -> tuple[Any, Any]:
    """The calibration of `name` on its shadow pairs in the log, and how many were used."""
    from edge_agent.errors import ConfigError
    from edge_agent.routing.calibration import calibration_for, log_pairs
    from edge_agent.routing.report import skill_scorers
    from edge_agent.runtime import open_runtime

    items = _log_items(settings, None, name)
    if items is None:
        raise ConfigError("no interaction log on this device: nothing to calibrate from")
    with open_runtime(settings) as rt:  # which adapter the skill runs now, on which model
        adapter, model = rt.adapter_of(name), rt.model_name
    pairs = log_pairs(items, name, skill_scorers(settings)(name), model=model, adapter=adapter)
    if not pairs.records:
        raise ConfigError(
            f"no shadow attempt of {name} by {adapter or 'the bare ' + model} beside a "
            f"teacher's call in the log ({pairs.other_attempts} by another adapter or model, "
            f"{pairs.unusable} unusable): route its turns to the teacher first"
        )
    calibration = calibration_for(
        pairs.records, target, model=model, adapter=adapter, skill=name, split="log"
    )
    return calibration, pairs


@route.command("report")
@since_option
@click.option("--days", type=click.IntRange(min=1), default=None, help="the last N days")
@click.option("--skill", default=None, help="only this skill")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="write a PNG: per skill and day, local share, agreement, teacher kB",
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    default=None,
    help="write a PNG of the calibration curve",
)
@json_option
def report(
    *, since: str | None, days: int | None, skill: str | None, out: Path | None,
    plot: Path | None, as_json: bool,
) -> None:  # fmt: skip
    """How turns were routed (from the sealed log), per skill and day, and what the
    calibration measured: share served locally, the small model's agreement with the
    teacher (late labels and shadow attempts), why turns escalated, what the teacher cost."""
    from edge_agent.routing.router import Calibrations
    from edge_agent.settings import load_settings

    settings = load_settings()
    calibrations = {
        name: c for name, c in Calibrations.load(settings.route_path).skills.items()
        if skill is None or name == skill
    }  # fmt: skip
    items = _log_items(settings, _report_since(since, days), skill)
    data: dict[str, Any] = {
        "calibration": {n: _calibration_summary(c) for n, c in calibrations.items()} or None,
        "log": _log_summary(settings, items),
        "skills": _skills(settings, items, skill),
    }
    if out is not None:
        data["png"] = str(_plot_skills(data["skills"], out))
    if plot is not None:
        data["plot"] = str(_plot(calibrations, plot))
    if as_json:
        echo_json(data)
        return
    _print_report(data)


def _report_since(since: str | None, days: int | None) -> float | None:
    """--since as given, or the start of the day N-1 days before today."""
    from datetime import datetime, timedelta

    if since is not None and days is not None:
        raise click.UsageError("give --since or --days, not both")
    if days is None:
        return parse_since(since)
    midnight = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - timedelta(days=days - 1)).timestamp()


def _log_items(settings: Any, since: float | None, skill: str | None) -> list[Any] | None:
    """The log's readable records (None without a log), of one skill when given."""
    from edge_agent.cli.log import open_store

    if not settings.log_enabled or not settings.log_path.exists():
        return None
    with open_store() as store:
        items = list(store.interactions(since=since, on_bad=lambda *_: None))
    return [i for i in items if skill is None or i.result.skill == skill]


def _log_summary(settings: Any, items: list[Any] | None) -> dict[str, Any] | None:
    from edge_agent.routing.calibration import log_summary
    from edge_agent.routing.report import skill_scorers

    return None if items is None else log_summary(items, skill_scorers(settings))


def _skills(settings: Any, items: list[Any] | None, skill: str | None) -> dict[str, Any] | None:
    from edge_agent.routing.report import skill_report, skill_scorers

    if items is None:
        return None
    return skill_report(items, scorer_for=skill_scorers(settings), skill=skill)


def _plot_skills(skills: dict[str, Any] | None, path: Path) -> Path:
    from edge_agent.errors import ConfigError
    from edge_agent.routing.report import plot_report

    if not skills:
        raise ConfigError("nothing to draw: no turns in the log for this report")
    return plot_report(path, skills)


def _calibration_summary(calibration: Any) -> dict[str, Any]:
    from edge_agent.routing.calibration import dumps_curve, quantiles, signals_in, sweep

    records, found = calibration.records, signals_in(calibration.records)
    summary = {
        "skill": calibration.skill, "model": calibration.model, "adapter": calibration.adapter,
        "split": calibration.split,
        "target_accuracy": calibration.target_accuracy, "met": calibration.met,
        "thresholds": calibration.thresholds.model_dump(),
        "stats": {k: round(v, 4) for k, v in calibration.stats.items()},
        "signals": found,
        "local_latency_ms": quantiles([r.latency_ms for r in records]),
        "curve_min_logprob": dumps_curve(sweep(records, "min_logprob")),
    }  # fmt: skip
    if "distance" in found:
        summary["curve_distance"] = dumps_curve(sweep(records, "distance"))
    return summary


def _plot(calibrations: dict[str, Any], path: Path) -> Path:
    """Each skill's calibration curves, and the point its thresholds chose."""
    from edge_agent.errors import ConfigError
    from edge_agent.routing.calibration import outcome, plot_curves, signals_in, sweep

    chosen = {name: c for name, c in calibrations.items() if c.records}
    if not chosen:
        raise ConfigError("nothing to plot: run `edge-agent route calibrate` first")
    curves, points = {}, {}
    for name, c in chosen.items():
        for signal in signals_in(c.records) or ["min_logprob"]:
            curves[f"{name}: {signal} threshold ({c.split})"] = sweep(c.records, signal)
        stats = outcome(c.records, c.thresholds, c.remote_accuracy)
        points[f"{name}: calibrated"] = (stats["local_share"], stats["accuracy"])
    targets = {c.target_accuracy for c in chosen.values()}
    return plot_curves(
        path, curves, points, title="router thresholds per skill",
        target=(0.0, targets.pop()) if len(targets) == 1 else None,
    )  # fmt: skip


def _print_calibration(s: dict[str, Any]) -> None:
    stats, met = s["stats"], "met" if s["met"] else "NOT reachable"
    on = s["adapter"] or f"the bare {s['model']}"
    click.echo(f"{s['skill']} ({on}): calibrated on {int(stats['n'])} {s['split']} rows, "
               f"target {s['target_accuracy']:.1%} ({met})")  # fmt: skip
    if "pairs" in s:
        p = s["pairs"]
        click.echo(f"log pairs: {p['used']} used, {p['skipped']} skipped ({p['other_adapter']} "
                   f"by another adapter or model, {p['unusable']} unusable)")  # fmt: skip
    click.echo(f"thresholds: {s['thresholds']}")
    click.echo(f"served locally {stats['local_share']:.1%}, overall {stats['accuracy']:.1%}, "
               f"local calls right {stats['local_accuracy']:.1%} "
               f"(all local: {stats['local_only_accuracy']:.1%})")  # fmt: skip
    if "file" in s:
        click.echo(f"saved to {s['file']}")


def _print_report(data: dict[str, Any]) -> None:
    if data["calibration"] is None:
        click.echo("no calibration yet: `edge-agent route calibrate` (only failures escalate)")
    for summary in (data["calibration"] or {}).values():
        _print_calibration(summary)
    log = data["log"]
    if not log or not log["turns"]:
        click.echo("no routed turns in the log")
    else:
        click.echo(f"log: {log['turns']} routed turns {log['routes']}, "
                   f"served locally {log['local_share']:.1%}")  # fmt: skip
        agree = log["local_agrees_with_teacher"]
        if agree is not None:
            click.echo(f"escalated turns where the local attempt matched the teacher: {agree:.1%}")
        click.echo(f"latency ms by route: {log['latency_ms']}")
        click.echo(f"sent to the remote: {log['remote']}; "
                   f"queued for a teacher: {log['queued_for_teacher']}")  # fmt: skip
    for name, summary in (data.get("skills") or {}).items():
        _print_skill(name, summary)
    for key in ("png", "plot"):
        if key in data:
            click.echo(f"{key}: {data[key]}")


def _print_skill(name: str, summary: dict[str, Any]) -> None:
    click.echo(f"skill {name}: {_day_line(summary['total'])}")
    for row in summary["days"]:
        click.echo(f"  {row['day']}  {_day_line(row)}")


def _day_line(s: dict[str, Any]) -> str:
    pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
    reasons = ", ".join(f"{k} {v}" for k, v in s["reasons"].items()) or "none"
    return (f"{s['turns']} turns, {pct(s['local_share'])} local, "
            f"local right {pct(s['local_accuracy'])} of {s['labelled']} labelled, "
            f"shadow agreement {pct(s['shadow_agreement'])} of {s['shadowed']}, "
            f"{s['queued']} queued, teacher {s['teacher_bytes'] / 1000:.1f} kB; "
            f"escalated for: {reasons}")  # fmt: skip


@route.command("label")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="teacher requests in this round at most [default: remote_label_batch]",
)
@click.option(
    "--max-age-days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="leave older turns unlabelled [default: remote_label_max_age_days]",
)
@json_option
def label(limit: int | None, max_age_days: float | None, as_json: bool) -> None:
    """Ask the teacher now about turns served locally while it was down (queued in the log,
    of skills with teacher_labels_offline); each answer is logged as a label of its turn.
    `serve` does this on its own each sync round."""
    from edge_agent.cli.log import open_store
    from edge_agent.errors import ConfigError
    from edge_agent.routing.labels import SettingsSource, label_queued
    from edge_agent.settings import load_settings

    settings = load_settings()
    if not settings.log_enabled or not settings.log_path.exists():
        raise ConfigError("no interaction log on this device: nothing is queued for a label")
    limit = limit or settings.remote_label_batch
    max_age_days = max_age_days or settings.remote_label_max_age_days
    with open_store() as store:
        source = SettingsSource(settings, store)
        try:
            done = label_queued(source, limit=limit, max_age_s=max_age_days * 86_400)
        finally:
            source.close()
    if as_json:
        echo_json(done.as_dict())
        return
    click.echo(f"labelled {done.labelled} of {done.waiting} queued turns "
               f"({done.remaining} left, {done.failed} unusable answers, {done.skipped} skipped, "
               f"{done.teacher_bytes / 1000:.1f} kB sent)")  # fmt: skip
    if done.stopped:
        click.echo(f"stopped: {done.stopped}", err=True)


# --- the remote's API key in the OS keyring -------------------------------------------------

url_argument = click.argument("url", required=False)


@route.group("key")
def key() -> None:
    """The remote model's API key in the OS keyring (service edge-agent-remote, user = URL).
    URL defaults to remote_url. The key is never taken as an argument (it would show in ps)."""


@key.command("set")
@url_argument
def key_set(url: str | None) -> None:
    """Store the key for URL: a hidden prompt on a terminal, else one line of stdin."""
    from edge_agent.errors import ConfigError
    from edge_agent.routing.remote import store_api_key

    settings, url = _key_target(url)
    if sys.stdin.isatty():
        secret = click.prompt(f"API key for {url}", hide_input=True, err=True)
    else:
        secret = sys.stdin.readline()
    if not secret.strip():
        raise ConfigError("no key given: type it at the prompt or pipe it on stdin")
    store_api_key(url, secret.strip())
    click.echo(f"stored the API key for {url} in the OS keyring")
    if settings.remote_api_key_env:
        click.echo(f"note: remote_api_key_env names ${settings.remote_api_key_env}, which is "
                   "read instead of the keyring", err=True)  # fmt: skip


@key.command("delete")
@url_argument
def key_delete(url: str | None) -> None:
    """Remove the key for URL from the OS keyring."""
    from edge_agent.routing.remote import delete_api_key

    _, url = _key_target(url)
    if delete_api_key(url):
        click.echo(f"deleted the API key for {url} from the OS keyring")
    else:
        click.echo(f"no key was stored for {url} in the OS keyring")


@key.command("status")
@url_argument
@json_option
def key_status(url: str | None, as_json: bool) -> None:
    """Where the key for URL is read from, and whether it is there (never the key)."""
    import os

    from edge_agent.routing.remote import keyring_has_key

    settings, url = _key_target(url)
    env = settings.remote_api_key_env
    # As api_key() reads it: a named variable wins and the keyring is never consulted.
    stored = bool(os.environ.get(env)) if env else keyring_has_key(url)
    data = {"url": url, "source": "env" if env else "keyring", "env": env, "stored": stored}
    if as_json:
        echo_json(data)
        return
    where = f"the environment variable ${env} (remote_api_key_env)" if env else "the OS keyring"
    click.echo(f"{url}: {'a key' if stored else 'no key'} in {where}")


def _key_target(url: str | None) -> tuple[Any, str]:
    from edge_agent.errors import ConfigError
    from edge_agent.settings import load_settings

    settings = load_settings()
    url = url or settings.remote_url
    if not url:
        raise ConfigError("no URL: pass the endpoint's URL or set remote_url")
    return settings, url
