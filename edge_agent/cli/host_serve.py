"""`edge-agent host serve`: the ingest API and the signed adapter repository over HTTPS, in one
process (the default: SQLite, a home lab) or several worker processes on one port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edge_agent.errors import ConfigError


def _cli() -> Any:
    """The `host` group's module, looked up at call time (its helpers are the tests' seams)."""
    from edge_agent.cli import host

    return host


@click.command("serve")
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
    "--batches-per-minute",
    type=click.IntRange(min=1),
    default=None,
    help="per device, counted in the store so it holds across workers (default: no limit)",
)
@click.option(
    "--metrics-token",
    envvar="EDGE_AGENT_METRICS_TOKEN",
    default=None,
    help="the Bearer token /metrics asks for (default: one made on first use, kept 0600 in "
    "<host dir>/metrics.token)",
)
@click.option(
    "--max-body-kb",
    type=int,
    default=1024,
    show_default=True,
    help="largest batch on the wire (a device's is 256 KiB at most by default)",
)
@click.option("--openapi", is_flag=True, help="serve /openapi.json (off: it maps the API)")
@click.option(
    "--database-url",
    envvar="EDGE_AGENT_HOST_DATABASE_URL",
    default=None,
    help="postgresql://… : the ingest store every worker shares (default: SQLite in the host dir)",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="worker processes on the one port (more than one needs a PostgreSQL store)",
)
@click.option(
    "--graceful-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="seconds a stopping server gives the requests in flight before dropping them",
)
def serve(bind: str, port: int, cert: Path | None, key: Path | None, **limits: Any) -> None:
    """Serve the ingest API and the signed adapter repository over HTTPS."""
    import threading

    from edge_agent.host.ingest import serve as run_server
    from edge_agent.host.tls import ensure_certificate

    if (cert is None) != (key is None):
        raise click.UsageError("give both --cert and --key, or neither")
    _check_workers(limits["workers"], limits.get("database_url"))
    if cert is None or key is None:
        cert, key = ensure_certificate(_cli()._host_dir() / "tls")
    repo = _cli()._repository()
    config = _config(cert, repo.folder, limits)
    click.echo(
        f"ingest on https://{bind}:{port} ({limits['workers']} worker(s)), "
        f"certificate sha256:{config.cert_sha256}",
        err=True,
    )
    stop = threading.Event()  # keeps the repository's timestamp signed while serving
    repo.refresh()
    threading.Thread(target=repo.refresh_every, args=(3600.0, stop), daemon=True).start()
    try:
        run_server(
            config,
            host=bind,
            port=port,
            certfile=cert,
            keyfile=key,
            workers=limits["workers"],
            graceful_timeout_s=limits["graceful_timeout"],
        )
    finally:
        stop.set()


def _config(cert: Path, tuf_dir: Path, limits: dict[str, Any]) -> Any:
    from edge_agent.host.ingest import IngestConfig
    from edge_agent.host.ingest_store import Quota
    from edge_agent.host.tls import cert_fingerprint

    return IngestConfig(
        db_path=_cli()._host_dir() / "ingest.db",
        cert_sha256=cert_fingerprint(cert),
        quota=Quota(
            records_per_day=limits["quota_records"],
            batches_per_minute=limits["batches_per_minute"],
        ),
        retention_days=limits["retention_days"],
        metrics_token=limits["metrics_token"] or _cli()._metrics_token(),
        tuf_dir=tuf_dir,
        max_body_bytes=limits["max_body_kb"] * 1024,
        openapi=limits["openapi"],
        database_url=limits["database_url"],
    )


def _check_workers(workers: int, database_url: str | None) -> None:
    """SQLite is the single-worker store: every write waits on its one file lock, and a worker
    that waits past the busy timeout answers 500s. PostgreSQL is the store for workers."""
    if workers > 1 and not (database_url or "").startswith(("postgresql:", "postgres:")):
        raise ConfigError(
            f"--workers {workers} needs a PostgreSQL store (a postgresql:// database URL); "
            "SQLite, the default, serves one worker"
        )
