"""`host train --all [--ray ADDRESS|auto|local]`: a training job per skill with new data, in
this process one after another or as Ray tasks; promoted adapters are published on this
host, signed with its keys, one at a time."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from edge_agent.cli._common import echo_json, settings_from

JOB_KEYS = ("ray_address", "ray_cpus", "job_cpus", "job_gpus", "job_memory_gb", "retries")

_OPTIONS = (
    click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
                 help="with --all, run each skill's job as a Ray task: the head's HOST:6379 "
                      "(ray://HOST:10001 needs ray[client]), auto (the cluster this machine "
                      "is in) or local (start one here); needs the fleet extra"),
    click.option("--ray-cpus", type=click.IntRange(min=1), default=None,
                 help="CPUs of a --ray local cluster (default: all of them)"),
    click.option("--job-cpus", type=click.FloatRange(min=0.5), default=1.0, show_default=True,
                 help="CPUs each Ray job asks for (torch's threads there)"),
    click.option("--job-gpus", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
                 help="GPUs each Ray job asks for"),
    click.option("--job-memory-gb", type=click.FloatRange(min=0.1), default=None,
                 help="memory each Ray job asks for (what Ray schedules by)"),
    click.option("--retries", type=click.IntRange(min=0), default=1, show_default=True,
                 help="with --all, how often a failed skill's job is tried again"),
)  # fmt: skip


def job_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """`host train`'s --ray and job options, handed to it as one ``jobs`` dict."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        jobs = {k: kwargs.pop(k) for k in JOB_KEYS}
        return f(*args, jobs=jobs, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def check_jobs(jobs: dict[str, Any], all_skills: bool) -> None:
    if jobs["ray_address"] is not None and not all_skills:
        raise click.UsageError("--ray runs the jobs of --all: add --all")
    if jobs["ray_cpus"] is not None and jobs["ray_address"] != "local":
        raise click.UsageError("--ray-cpus sizes a --ray local cluster")


def _cli() -> Any:
    """The `host` group's module, looked up at call time (its helpers are the tests' seams)."""
    from edge_agent.cli import host

    return host


def train_all_skills(jobs: dict[str, Any], **options: Any) -> None:
    """Train every skill with new data, publish what the gate promotes (with --publish)."""
    from edge_agent.host.jobs import JobResources, open_runner
    from edge_agent.host.train_all import train_all

    host, settings = _cli(), settings_from()
    repository = _repository(options["publish_it"])
    model_path = host._model_path(options["model"])
    resources = JobResources(cpus=jobs["job_cpus"], gpus=jobs["job_gpus"],
                             memory_gb=jobs["job_memory_gb"], retries=jobs["retries"])  # fmt: skip
    store = host._store()
    try:
        with open_runner(jobs["ray_address"], resources, local_cpus=jobs["ray_cpus"]) as runner:
            outcomes = train_all(
                store, repository, runner, _options(model_path, settings, options),
                publisher=_publisher(repository, model_path, options),
                clusterer=host._clusters if options["cluster"] else None,
            )  # fmt: skip
    finally:
        store.close()
    _report(outcomes, options["as_json"])


def _repository(publish_it: bool) -> Any:
    """The adapter repository: made on first use to publish; else only read, if there."""
    host = _cli()
    if publish_it:
        return host._repository()
    return host._repository() if (host._host_dir() / "tuf" / "config.json").exists() else None


def _options(model_path: Any, settings: Any, options: dict[str, Any]) -> Any:
    from edge_agent.host.train_all import TrainAllOptions

    return TrainAllOptions(
        options["out"], model_path, options["config"], margin=options["margin"],
        n_ctx=settings.context_size or 4096, onnx_adapter=options["onnx"],
        min_train=options["min_train"], settings=settings,
    )  # fmt: skip


def _publisher(repository: Any, model_path: Any, options: dict[str, Any]) -> Any:
    from edge_agent.host.train_all import publish_with

    if not options["publish_it"]:
        return None
    return publish_with(repository, model_path, profiles=options["profiles"],
                        embedder_dir=_cli()._embedder_dir())  # fmt: skip


def _report(outcomes: list[Any], as_json: bool) -> None:
    from edge_agent.errors import FlywheelError

    if as_json:
        echo_json({"skills": {o.skill: o.to_dict() for o in outcomes}})
    elif not outcomes:
        click.echo("nothing to train: no device has synced a turn here yet")
    for outcome in outcomes if not as_json else ():
        click.echo(outcome.line())
    failed = [o.skill for o in outcomes if o.status == "failed"]
    if failed:
        raise FlywheelError(
            f"{len(failed)} of {len(outcomes)} skills failed: {', '.join(failed)} (the others "
            "were trained and published as shown)"
        )
