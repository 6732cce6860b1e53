"""`edge-agent host`: the host side: ingest synced turns from enrolled devices, train on them
(`host train` needs the `[host]` extra) and publish signed adapters (`host publish`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from edge_agent.cli._common import echo_json, json_option, settings_from
from edge_agent.cli.host_serve import serve
from edge_agent.cli.host_skills import report, skills
from edge_agent.cli.host_train import check_jobs, job_options, train_all_skills


def _host_dir() -> Path:
    return Path(settings_from().data_dir) / "host"


def _repository(folder: Path | None = None, keys: Path | None = None) -> Any:
    """The host's signed adapter repository, created on first use; or `folder` (a copy on the
    machine that keeps the offline keys, in `keys`)."""
    from edge_agent.host.publish import AdapterRepository

    if folder is None and keys is None:
        return AdapterRepository.open_or_init(_host_dir() / "tuf")
    return AdapterRepository(folder or _host_dir() / "tuf", key_dir=keys)


_repo_option = click.option(
    "--repo", "repo_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None, help="a copy of the adapter repository (default: this host's)",
)  # fmt: skip
_keys_option = click.option(
    "--keys", "keys_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None, help="the folder with the root and targets keys, when kept offline",
)  # fmt: skip


DATABASE_URL_ENV = "EDGE_AGENT_HOST_DATABASE_URL"


def _store() -> Any:
    """The ingest store: PostgreSQL where $EDGE_AGENT_HOST_DATABASE_URL names one, else the
    host folder's SQLite file."""
    import os

    from edge_agent.host.ingest_store import IngestStore

    return IngestStore(os.environ.get(DATABASE_URL_ENV) or _host_dir() / "ingest.db")


@click.group()
def host() -> None:
    """The host: ingest synced turns from enrolled devices (and train on them)."""


host.add_command(serve)
host.add_command(skills)
host.add_command(report)


def _metrics_token() -> str:
    from edge_agent.host.metrics import ensure_metrics_token

    path = _host_dir() / "metrics.token"
    token = ensure_metrics_token(path)
    click.echo(f"/metrics needs the Bearer token in {path}", err=True)
    return token


@host.command("enroll-token")
@click.option("--ttl-hours", type=float, default=24.0, show_default=True)
@click.option("--url", default="https://HOST:8443", help="how devices reach this host")
def enroll_token(ttl_hours: float, url: str) -> None:
    """A one-time token for enrolling one device, and the command to run on it."""
    from edge_agent.host.tls import cert_fingerprint, ensure_certificate

    cert, _ = ensure_certificate(_host_dir() / "tls")
    store = _store()
    try:
        token = store.create_token(ttl_hours * 3600)
    finally:
        store.close()
    click.echo(f"edge-agent sync enroll {url} {token} --pin sha256:{cert_fingerprint(cert)}")


@host.command("devices")
@json_option
def devices(as_json: bool) -> None:
    """Enrolled devices and how many records each has stored here."""
    store = _store()
    try:
        rows = store.devices()
    finally:
        store.close()
    if as_json:
        echo_json(rows)
        return
    for d in rows:
        expires = datetime.fromtimestamp(d["expires"]).date()
        click.echo(f"{d['id']}  {d['records']} records  credential expires {expires}")


@host.command("forget")
@click.argument("device_id")
def forget(device_id: str) -> None:
    """Delete everything of DEVICE_ID here: records, batches, usage, its credential."""
    store = _store()
    try:
        gone = store.forget(device_id)
    finally:
        store.close()
    if not any(gone.values()):
        click.echo(f"nothing stored for {device_id}")
        return
    click.echo(
        f"forgot {device_id}: {gone['records']} records, {gone['batches']} batches; "
        "its credential no longer works"
    )


@host.command("publish")
@click.argument("adapter", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skill", required=True, help="the toolset it was trained for, e.g. home")
@click.option("--profile", "profiles", multiple=True, help="a device profile it was gated for")
@click.option(
    "--release",
    "release_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON of further release fields (canary, centroids, gate)",
)
@_repo_option
@_keys_option
@json_option
def publish(
    *,
    adapter: Path,
    skill: str,
    profiles: tuple[str, ...],
    release_file: Path | None,
    repo_dir: Path | None,
    keys_dir: Path | None,
    as_json: bool,
) -> None:
    """Sign ADAPTER.gguf into the adapter repository as the next version of --skill."""
    import json

    from edge_agent.adapters.release import AdapterRelease
    from edge_agent.lora.gguf import adapter_identity

    repo = _repository(repo_dir, keys_dir)
    version = repo.next_version(skill)
    try:
        extra = json.loads(release_file.read_text()) if release_file else {}
        fields = {
            **extra,
            "name": f"{skill}-v{version}",
            "skill": skill,
            "version": version,
            "base_identity": adapter_identity(adapter).as_dict(),
            "target_profiles": list(profiles) or extra.get("target_profiles", []),
        }
        release = AdapterRelease(**fields)
    except ValueError as exc:  # the --release file: not JSON, or not release fields
        raise click.BadParameter(str(exc), param_hint="--release") from exc
    target = repo.publish(adapter, release)
    if as_json:
        echo_json(release.model_dump(mode="json") | {"target": target})
        return
    click.echo(f"published {release.name} as {target} in {repo.folder}")
    _say_what_to_bring(repo)


def _say_what_to_bring(repo: Any) -> None:
    """On a copy without the online keys: what goes to the ingest host, and what then."""
    if repo.holds_online_keys():
        return
    version = repo.versions()["targets"]
    click.echo(
        f"signed {version}.targets.json here; bring {repo.targets_dir}/ first, then "
        f"{repo.metadata_dir}/ but timestamp.json and *.snapshot.json, into the ingest host's "
        "repository, and run `edge-agent host refresh` there"
    )


@host.command("offline-keys")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def offline_keys(dest: Path) -> None:
    """Move the root and targets keys to DEST (a USB stick): this host keeps only the
    snapshot and timestamp keys; adapters are signed where DEST is (`publish --keys`)."""
    moved = _repository().move_keys_offline(dest)
    click.echo(f"moved {', '.join(p.name for p in moved)} to {dest}: keep it off this host")
    click.echo(
        "sign there, on a copy of this repository: `edge-agent host publish ADAPTER --skill "
        f"SKILL --repo COPY --keys {dest}`; `host sign-targets` renews targets (30 days)"
    )


@host.command("sign-targets")
@_repo_option
@click.option("--keys", "keys_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="the folder with the targets (and root) key")  # fmt: skip
def sign_targets(repo_dir: Path | None, keys_dir: Path) -> None:
    """Re-sign the targets metadata with a fresh expiry, where its key is kept."""
    repo = _repository(repo_dir, keys_dir)
    click.echo(f"signed targets v{repo.sign_targets()} in {repo.folder}")
    _say_what_to_bring(repo)


@host.command("refresh")
def refresh() -> None:
    """Re-sign the timestamp now and snapshot targets signed on another machine (`host
    serve` does it hourly)."""
    repo = _repository()
    repo.refresh()
    versions = repo.versions()
    roles = ("timestamp", "snapshot", "targets", "root")
    click.echo(", ".join(f"{role} v{versions[role]}" for role in roles))


@host.group("embedder")
def embedder() -> None:
    """The sentence embedder that clusters requests (all-MiniLM-L6-v2, int8 ONNX)."""


@embedder.command("export")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="folder (default: <host dir>/embedders/all-minilm-l6-v2-int8)")  # fmt: skip
@click.option("--fp32", is_flag=True, help="keep float32 weights (no int8 quantization)")
@json_option
def embedder_export(out: Path | None, fp32: bool, as_json: bool) -> None:
    """Export all-MiniLM-L6-v2 to ONNX (int8 by default) with its tokenizer."""
    import json

    from quantize.embedder import default_embedder_dir, export_embedder

    folder = export_embedder(
        out or default_embedder_dir(_host_dir(), quantized=not fp32), quantize=not fp32
    )
    spec = json.loads((folder / "embedder.json").read_text())
    if as_json:
        echo_json(spec | {"folder": str(folder)})
        return
    size_mb = (folder / "model.onnx").stat().st_size / 2**20
    click.echo(f"{spec['name']}  dim {spec['dim']}  {size_mb:.1f} MB  sha256:{spec['sha256']}")
    click.echo(f"folder    {folder}")


@host.command("select")
@click.option("--skill", default="home", show_default=True)
@click.option("--target", "targets", multiple=True, required=True, metavar="PROFILE:RAM_MB",
              help="a device class: its profile and its smallest board's RAM, e.g. "
                   "raspberry-pi-4:2048 (repeat for each class)")  # fmt: skip
@click.option("--context", type=int, default=512, show_default=True,
              help="tokens the skill's prompts need (`host train` reports it)")  # fmt: skip
@json_option
def select(skill: str, targets: tuple[str, ...], context: int, as_json: bool) -> None:
    """Which catalog model to fine-tune for SKILL: the one each target's fit plan will run."""
    from edge_agent.host.select import load_measured, select_models
    from edge_agent.models.catalog import load_catalog

    selection = select_models(skill, [_target(t) for t in targets], load_catalog(), context,
                              load_measured(skill))  # fmt: skip
    if as_json:
        echo_json(selection.to_dict())
        return
    for line in selection.reasons:
        click.echo(line)
    click.echo(f"train {len(selection.bases)} adapter(s): {', '.join(selection.bases)}")


def _target(text: str) -> Any:
    from edge_agent.host.select import Target
    from edge_agent.models.profile import load_profile

    name, _, ram = text.partition(":")
    if not ram.isdigit():
        raise click.BadParameter(f"{text!r}: write PROFILE:RAM_MB", param_hint="--target")
    return Target(load_profile(name), int(ram))


@host.command("train")
@click.option(
    "--skill", default=None, help="train this skill from the store (implies --from-store)"
)
@click.option("--all", "all_skills", is_flag=True,
              help="a job per skill with enough data and new rows since its latest release "
                   "(--ray: as Ray tasks)")  # fmt: skip
@click.option("--min-train", type=int, default=None,
              help="--all skips a skill with fewer training rows (default 10)")  # fmt: skip
@click.option("--rows", type=click.Choice(["split"]), default=None,
              help="train on the committed HA split, as if a teacher had labelled it")  # fmt: skip
@click.option("--interactions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="JSONL of logged interactions (or curated records)")  # fmt: skip
@click.option("--from-store", is_flag=True, help="train on what enrolled devices synced here")
@click.option("--eval", "eval_on", type=click.Choice(["curated", "split"]), default="curated",
              help="gate on held-out teacher labels, or on the HA test split (home)")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("flywheel"),
              help="the turn's folder; a skill from the store gets OUT/<skill>/")  # fmt: skip
@click.option("--model", "-m", default=None, help="base GGUF path (default: the catalog default)")
@click.option("--incumbent", type=click.Path(exists=True, path_type=Path), default=None,
              help="the adapter to beat (default: the skill's latest release, else the bare "
                   "base model)")  # fmt: skip
@click.option("--epochs", type=float, default=None)
@click.option("--learning-rate", type=float, default=None)
@click.option("--rank", type=int, default=None)
@click.option("--alpha", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--first-layer", type=int, default=None, help="LoRA on this layer and above")
@click.option("--max-steps", type=int, default=None)
@click.option("--margin", type=float, default=0.02, help="exact-match gain needed to promote")
@click.option("--publish", "publish_it", is_flag=True,
              help="sign a promoted adapter into the host's adapter repository")  # fmt: skip
@click.option("--profile", "profiles", multiple=True, help="a device profile it is meant for")
@click.option("--onnx-adapter/--no-onnx-adapter", default=None,
              help="also write an .onnx_adapter (default: if a --profile runs onnx)")  # fmt: skip
@click.option("--cluster/--no-cluster", default=True, show_default=True,
              help="cluster the requests (their centroids travel with the adapter)")  # fmt: skip
@job_options
@json_option
def train(
    *,
    skill: str | None,
    all_skills: bool,
    min_train: int | None,
    rows: str | None,
    interactions: Path | None,
    from_store: bool,
    eval_on: str,
    out: Path,
    model: str | None,
    incumbent: Path | None,
    margin: float,
    publish_it: bool,
    profiles: tuple[str, ...],
    onnx_adapter: bool | None,
    cluster: bool,
    as_json: bool,
    jobs: dict[str, Any],
    **overrides: Any,
) -> None:
    """Curate → fine-tune a LoRA → export to GGUF → gate it through llama.cpp, per skill."""
    from edge_agent.host.finetune import TrainConfig
    from edge_agent.host.pipeline import cluster_overview, gather, run_turn

    per_skill = from_store or skill is not None or all_skills
    _check_sources(rows=rows, interactions=interactions, per_skill=per_skill, skill=skill,
                   all_skills=all_skills, eval_on=eval_on, incumbent=incumbent)  # fmt: skip
    check_jobs(jobs, all_skills)
    config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    onnx = _targets_onnx(profiles) if onnx_adapter is None else onnx_adapter
    if all_skills:  # a job per skill with new data, in this process or on Ray
        from edge_agent.host.flywheel import MIN_TRAIN

        return train_all_skills(jobs, min_train=min_train or MIN_TRAIN, out=out, model=model,
                                margin=margin, publish_it=publish_it, profiles=profiles,
                                onnx=onnx, cluster=cluster, as_json=as_json,
                                config=config)  # fmt: skip
    if per_skill:
        from edge_agent.cli.host_skills import train_skills
        from edge_agent.host.curate import LEGACY_SKILL

        train_skills([skill or LEGACY_SKILL], min_train=1, eval_on=eval_on, out=out,
                     model=model, incumbent=incumbent, margin=margin, publish_it=publish_it,
                     profiles=profiles, onnx=onnx, cluster=cluster, as_json=as_json,
                     config=config)  # fmt: skip
        return
    curated = gather(rows=rows, interactions=interactions, eval_on=eval_on)
    model_path = _model_path(model)
    clustering = _clusters(curated.train) if cluster else None
    n_ctx = settings_from().context_size or 4096
    result = run_turn(curated, model_path, out, config=config, incumbent=incumbent,
                      margin=margin, progress=not as_json, n_ctx=n_ctx,
                      onnx_adapter=onnx)  # fmt: skip
    if clustering is not None:
        result.summary["clusters"] = cluster_overview(clustering)
    if publish_it and result.promoted:
        _publish(result, curated, model_path, profiles, clustering)
    if as_json:
        echo_json(result.summary | {"adapter": str(result.adapter)})
        return
    _print_summary(result.summary, result.adapter, result.promoted)


def _check_sources(
    *,
    rows: str | None,
    interactions: Path | None,
    per_skill: bool,
    skill: str | None,
    all_skills: bool,
    eval_on: str,
    incumbent: Path | None,
) -> None:
    if [rows is not None, interactions is not None, per_skill].count(True) != 1:
        raise click.UsageError(
            "give exactly one of --rows split, --interactions FILE, --from-store "
            "(--skill NAME, --all)"
        )
    if skill is not None and all_skills:
        raise click.UsageError("give --skill NAME or --all, not both")
    if all_skills and incumbent is not None:
        raise click.UsageError("--incumbent names one skill's adapter: use it with --skill")
    if eval_on == "split" and (all_skills or skill not in (None, "home")):
        raise click.UsageError("--eval split is the home skill's HA test split: use --skill home")


def _publish(
    result: Any, curated: Any, model_path: Path, profiles: tuple[str, ...], clustering: Any
) -> None:
    """Sign a promoted turn as its skill's next release (the embedder first, if clustered)."""
    from edge_agent.host.pipeline import publish_turn

    clusters = clustering.summary(skill=result.skill) if clustering else None
    repository = _repository()
    if clusters is not None and clusters.centroids:  # devices need it before the release
        repository.publish_embedder(_embedder_dir())
    release = publish_turn(result, curated, model_path, repository, profiles=profiles,
                           clusters=clusters)  # fmt: skip
    result.summary["published"] = release.name


def _targets_onnx(profiles: tuple[str, ...]) -> bool:
    """Whether any target profile runs the onnx backend (its devices get an .onnx_adapter)."""
    from edge_agent.models.profile import load_profile

    folder = settings_from().profiles_dir
    extra = (folder,) if folder else ()
    return any(load_profile(name, extra_dirs=extra).backend == "onnx" for name in profiles)


def _clusters(records: Any) -> Any:
    """The training requests' clusters, with the host's embedder (exported on first use)."""
    from edge_agent.host.pipeline import cluster_records
    from quantize.embedder import open_or_export

    return cluster_records(records, open_or_export(_embedder_dir()))


def _embedder_dir() -> Path:
    """The host's embedder: what `_clusters` embeds with and `--publish` signs for devices."""
    from quantize.embedder import default_embedder_dir

    return default_embedder_dir(_host_dir())


def _model_path(model: str | None) -> Path:
    if model:
        return Path(model)
    from edge_agent.cli._common import settings_from
    from edge_agent.models.catalog import load_catalog
    from edge_agent.models.store import ModelStore

    settings = settings_from()
    store = ModelStore(settings.models_dir, offline=settings.is_offline)
    return store.ensure(load_catalog().default())


def _print_summary(summary: dict[str, Any], adapter: Path, promoted: bool) -> None:
    new, old = summary["candidate"], summary["incumbent"]
    click.echo(f"data      {summary['data']}")
    click.echo(f"minutes   {summary['minutes']}")
    if "clusters" in summary:
        clusters = summary["clusters"]["clusters"]
        names = ", ".join(c["name"] for c in clusters[:3])
        click.echo(f"clusters  {len(clusters)} (largest: {names})")
    click.echo(f"before    right tool {old['right_tool']:.1%}  exact {old['exact']:.1%}")
    click.echo(f"after     right tool {new['right_tool']:.1%}  exact {new['exact']:.1%}")
    verdict = "PROMOTE" if promoted else "KEEP INCUMBENT"
    click.echo(f"gate      {verdict}: {summary['reason']}")
    click.echo(f"adapter   {adapter}  (report: {adapter.parent / 'gate.json'})")
    if summary.get("onnx_adapter"):
        click.echo(f"onnx      {summary['onnx_adapter']}")
    if "published" in summary:
        click.echo(f"published {summary['published']} (devices pull it: edge-agent adapters pull)")
