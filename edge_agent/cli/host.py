"""`edge-agent host`: the host side: ingest synced turns from enrolled devices, and train on them
(`host train` needs the `[host]` extra)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click

from edge_agent.cli._common import echo_json, json_option, settings_from


def _host_dir() -> Path:
    return Path(settings_from().data_dir) / "host"


def _store() -> Any:
    from edge_agent.host.store import IngestStore

    return IngestStore(_host_dir() / "ingest.db")


@click.group()
def host() -> None:
    """The host: ingest synced turns from enrolled devices (and train on them)."""


@host.command("serve")
@click.option("--host", "bind", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, default=8443, show_default=True)
@click.option(
    "--cert",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="PEM certificate (default: a self-signed one made on first use)",
)
@click.option("--key", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--retention-days", type=float, default=180.0, show_default=True)
@click.option(
    "--quota-records",
    type=int,
    default=100_000,
    show_default=True,
    help="records per device and day",
)
@click.option(
    "--metrics-token",
    envvar="EDGE_AGENT_METRICS_TOKEN",
    default=None,
    help="require it as a Bearer token on /metrics",
)
def serve(bind: str, port: int, cert: Path | None, key: Path | None, **limits: Any) -> None:
    """Serve the ingest API over HTTPS."""
    from edge_agent.host.ingest import IngestConfig, create_app
    from edge_agent.host.ingest import serve as run_server
    from edge_agent.host.store import Quota
    from edge_agent.host.tls import cert_fingerprint, ensure_certificate

    if (cert is None) != (key is None):
        raise click.UsageError("give both --cert and --key, or neither")
    if cert is None or key is None:
        cert, key = ensure_certificate(_host_dir() / "tls")
    config = IngestConfig(
        db_path=_host_dir() / "ingest.db",
        cert_sha256=cert_fingerprint(cert),
        quota=Quota(records_per_day=limits["quota_records"]),
        retention_days=limits["retention_days"],
        metrics_token=limits["metrics_token"],
    )
    click.echo(
        f"ingest on https://{bind}:{port}, certificate sha256:{config.cert_sha256}", err=True
    )
    run_server(create_app(config), host=bind, port=port, certfile=cert, keyfile=key)


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


@host.command("train")
@click.option("--rows", type=click.Choice(["split"]), default=None,
              help="train on the committed HA split, as if a teacher had labelled it")  # fmt: skip
@click.option("--interactions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="JSONL of logged interactions (or curated records)")  # fmt: skip
@click.option("--from-store", is_flag=True, help="train on what enrolled devices synced here")
@click.option("--eval", "eval_on", type=click.Choice(["curated", "split"]), default="curated",
              help="gate on held-out curated data, or on the committed HA test split")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("flywheel"))
@click.option("--model", "-m", default=None, help="base GGUF path (default: the catalog default)")
@click.option("--incumbent", type=click.Path(exists=True, path_type=Path), default=None,
              help="the adapter to beat (default: the bare base model)")  # fmt: skip
@click.option("--epochs", type=float, default=None)
@click.option("--learning-rate", type=float, default=None)
@click.option("--rank", type=int, default=None)
@click.option("--first-layer", type=int, default=None, help="LoRA on this layer and above")
@click.option("--max-steps", type=int, default=None)
@click.option("--margin", type=float, default=0.02, help="exact-match gain needed to promote")
@json_option
def train(
    *,
    rows: str | None,
    interactions: Path | None,
    from_store: bool,
    eval_on: str,
    out: Path,
    model: str | None,
    incumbent: Path | None,
    margin: float,
    as_json: bool,
    **overrides: Any,
) -> None:
    """Curate → fine-tune a LoRA → export to GGUF → gate it through llama.cpp."""
    from edge_agent.host.finetune import TrainConfig
    from edge_agent.host.pipeline import gather, run_turn

    if [rows is not None, interactions is not None, from_store].count(True) != 1:
        raise click.UsageError(
            "give exactly one of --rows split, --interactions FILE, --from-store"
        )
    store = _store() if from_store else None
    try:
        curated = gather(rows=rows, interactions=interactions, store=store, eval_on=eval_on)
    finally:
        if store is not None:
            store.close()
    config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    result = run_turn(curated, _model_path(model), out, config=config, incumbent=incumbent,
                      margin=margin, progress=not as_json)  # fmt: skip
    if as_json:
        echo_json(result.summary | {"adapter": str(result.adapter)})
        return
    _print_summary(result.summary, result.adapter, result.promoted)


def _model_path(model: str | None) -> Path:
    if model:
        return Path(model)
    from edge_agent.catalog import load_catalog
    from edge_agent.cli._common import settings_from
    from edge_agent.store import ModelStore

    settings = settings_from()
    store = ModelStore(settings.models_dir, offline=settings.is_offline)
    return store.ensure(load_catalog().default())


def _print_summary(summary: dict[str, Any], adapter: Path, promoted: bool) -> None:
    new, old = summary["candidate"], summary["incumbent"]
    click.echo(f"data      {summary['data']}")
    click.echo(f"minutes   {summary['minutes']}")
    click.echo(f"before    right tool {old['right_tool']:.1%}  exact {old['exact']:.1%}")
    click.echo(f"after     right tool {new['right_tool']:.1%}  exact {new['exact']:.1%}")
    verdict = "PROMOTE" if promoted else "KEEP INCUMBENT"
    click.echo(f"gate      {verdict}: {summary['reason']}")
    click.echo(f"adapter   {adapter}  (report: {adapter.parent / 'gate.json'})")
