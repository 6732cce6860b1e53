"""`edge-agent host skills`, `host report` and the per-skill turns of `host train --skill NAME`
and `--all`: the host side of the per-skill flywheel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edge_agent.cli._common import echo_json, json_option, settings_from


def _cli() -> Any:
    """The `host` group's module, looked up at call time (its helpers are the tests' seams)."""
    from edge_agent.cli import host

    return host


def _existing_repository() -> Any:
    """The host's adapter repository if one was made (reading never creates one)."""
    folder = _cli()._host_dir() / "tuf"
    return _cli()._repository() if (folder / "config.json").exists() else None


def _statuses(runs: Path | None) -> list[Any]:
    from edge_agent.host.report import skill_statuses

    store = _cli()._store()
    try:
        return skill_statuses(store, _existing_repository(), settings=settings_from(), runs=runs)
    finally:
        store.close()


@click.command("skills")
@json_option
def skills(as_json: bool) -> None:
    """The skills in the store: records, teacher labels, shadow agreement, tool sets, adapter."""
    statuses = [s.to_dict() for s in _statuses(None)]
    if as_json:
        echo_json([{k: v for k, v in s.items() if k not in ("days", "turns")} for s in statuses])
        return
    if not statuses:
        click.echo("no skills: no device has synced a turn here yet")
        return
    click.echo(f"{'skill':<24} {'records':>7} {'teacher':>7}  {'shadow agreement':<18} "
               f"{'toolsets':>8}  adapter")  # fmt: skip
    for s in statuses:
        adapter = s["adapter"] or "none"
        click.echo(f"{s['skill']:<24} {s['records']:>7} {s['teacher_labels']:>7}  "
                   f"{_agreement(s):<18} {len(s['toolsets']):>8}  {adapter}")  # fmt: skip


def _agreement(status: dict[str, Any]) -> str:
    share = status["shadow_agreement"]
    return "-" if share is None else f"{share:.0%} (of {status['shadow_attempts']})"


@click.command("report")
@click.option("--out", "png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the charts to this PNG (needs the [host] extra)")  # fmt: skip
@click.option("--runs", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="a `host train --out` folder: its gate reports")  # fmt: skip
@json_option
def report(png: Path | None, runs: Path | None, as_json: bool) -> None:
    """Per skill: records and shadow agreement per day, teacher labels, each release's gate."""
    from edge_agent.host.report import plot_report

    statuses = _statuses(runs)
    if png is not None:
        plot_report(statuses, png)
    if as_json:
        echo_json({"skills": [s.to_dict() for s in statuses],
                   "png": str(png) if png else None})  # fmt: skip
        return
    if not statuses:
        click.echo("no skills: no device has synced a turn here yet")
    for status in statuses:
        _print_status(status.to_dict())
    if png is not None:
        click.echo(f"charts    {png}")


def _print_status(s: dict[str, Any]) -> None:
    click.echo(f"{s['skill']}: {s['records']} records ({s['local']} served locally), "
               f"{s['teacher_labels']} teacher labels, shadow agreement {_agreement(s)}, "
               f"adapter {s['adapter'] or 'none'}")  # fmt: skip
    for d in s["days"]:
        agree = f"{d['agree']}/{d['shadow']} agree" if d["shadow"] else "no shadow attempts"
        click.echo(f"  {d['day']}  {d['records']} records, {d['local']} local, "
                   f"{d['teacher']} teacher labels, {agree}")  # fmt: skip
    for r in s["releases"]:
        click.echo(f"  {r['name']}  gate exact {_pct(r['before'])} -> {_pct(r['after'])} "
                   f"on {r['n']} held-out rows: {r['reason']}")  # fmt: skip
    for t in s["turns"]:
        verdict = "promoted" if t["promote"] else "kept the incumbent"
        click.echo(f"  turn {t['path']}: {_pct(t['before'])} -> {_pct(t['after'])}, {verdict}")


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.1%}"


def train_skills(names: list[str] | None, *, min_train: int, **options: Any) -> None:
    """`host train --skill NAME` (names: [NAME]) or `--all` (names: None): a turn per skill
    with enough data, each in OUT/<skill>/; with --all, a skill short of data is skipped."""
    from edge_agent.host.flywheel import plan_skills

    store = _cli()._store()
    try:
        plans = plan_skills(store, names, settings=settings_from(),
                            eval_on=options["eval_on"], min_train=min_train)  # fmt: skip
    finally:
        store.close()
    if names is not None and plans[0].skipped:
        raise click.ClickException(f"skill {plans[0].name} cannot be trained: {plans[0].skipped}")
    if not plans:  # --all on an empty store: nothing to do is no error
        click.echo("nothing to train: no device has synced a turn here yet", err=True)
        return echo_json({"skills": {}}) if options["as_json"] else None
    model_path = _cli()._model_path(options["model"])
    results = {}
    for plan in plans:
        if plan.skipped:
            results[plan.name] = plan.summary()
            if not options["as_json"]:
                click.echo(f"skipped {plan.name}: {plan.skipped}")
            continue
        results[plan.name] = _turn(plan, model_path, **options)
    if options["as_json"]:
        echo_json(results[names[0]] if names else {"skills": results})


def _turn(plan: Any, model_path: Path, **options: Any) -> dict[str, Any]:
    from edge_agent.host.flywheel import incumbent_for
    from edge_agent.host.pipeline import cluster_overview, run_turn

    host, as_json = _cli(), options["as_json"]
    incumbent, release = options["incumbent"], None
    if incumbent is None:
        incumbent, release = incumbent_for(_existing_repository(), plan.name, model_path)
    clustering = host._clusters(plan.curated.train) if options["cluster"] else None
    result = run_turn(
        plan.curated, model_path, options["out"] / plan.name, task=plan.task,
        config=options["config"], incumbent=incumbent, margin=options["margin"],
        progress=not as_json, n_ctx=settings_from().context_size or 4096,
        onnx_adapter=options["onnx"],
    )  # fmt: skip
    result.summary |= {"incumbent_release": release, "data_snapshot": plan.snapshot.to_dict()}
    if clustering is not None:
        result.summary["clusters"] = cluster_overview(clustering)
    if options["publish_it"] and result.promoted:
        host._publish(result, plan.curated, model_path, options["profiles"], clustering)
    if not as_json:
        click.echo(f"== {plan.name} ==")
        host._print_summary(result.summary, result.adapter, result.promoted)
    return dict(result.summary) | {"adapter": str(result.adapter)}
