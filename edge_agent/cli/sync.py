"""`edge-agent sync`: enroll with a host, then push anonymized turns to it."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import datetime
from typing import Any

import click

from edge_agent.cli._common import echo_json, json_option, settings_from


@click.group(invoke_without_command=True)
@click.option("--once", is_flag=True, help="one pass, then exit (for a cron job or a timer)")
@json_option
@click.pass_context
def sync(ctx: click.Context, once: bool, as_json: bool) -> None:
    """Push anonymized turns to the enrolled host: one pass with --once, else every
    sync_interval_s until stopped. Nothing leaves before enrollment and sync_enabled = true."""
    if ctx.invoked_subcommand is not None:
        return
    from edge_agent.cli.log import open_store
    from edge_agent.sync import open_client

    settings = settings_from()
    with open_store() as store:
        if once:
            with open_client(settings, store, scrubber=device_scrubber(settings)) as client:
                _print_report(client.sync(), as_json)
        else:
            _run_forever(settings, store)


def device_scrubber(settings: Any) -> Any:
    from edge_agent.skills import keep_words
    from edge_agent.sync import device_anonymizer

    return device_anonymizer(settings, keep_words(settings))


def _run_forever(settings: Any, store: Any) -> None:
    from edge_agent.sync import SyncWorker, open_client

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    scrubber = device_scrubber(settings)
    open_client(settings, store, scrubber=scrubber).close()  # refuse now if sync is off
    worker = SyncWorker(
        lambda stop: open_client(settings, store, scrubber=scrubber, stop=stop),
        settings.sync_interval_s,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    worker.start()
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        worker.stop()


def _print_report(report: Any, as_json: bool) -> None:
    from dataclasses import asdict

    if as_json:
        echo_json(asdict(report))
        return
    click.echo(
        f"synced {report.acknowledged} records in {report.batches} batches "
        f"({report.duplicates} already on the host, {report.retries} retries, "
        f"{report.bytes_sent / 1024:.0f} KiB sent)"
    )
    for record_id, why in report.held.items():
        click.echo(f"held back {record_id}: {why}", err=True)


@sync.command("enroll")
@click.argument("host_url")
@click.argument("token")
@click.option(
    "--pin",
    default=None,
    help="the host's certificate fingerprint (sha256:…), "
    "as `edge-agent host enroll-token` prints it",
)
def enroll_cmd(host_url: str, token: str, pin: str | None) -> None:
    """Enroll this device with the host at HOST_URL using a one-time TOKEN ('-': read it from
    stdin, which keeps it out of the shell history)."""
    from edge_agent.sync import enroll

    settings = settings_from()
    if token == "-":
        token = sys.stdin.readline().strip()
    enrollment = enroll(host_url, token, pin=pin, timeout_s=settings.sync_timeout_s)
    enrollment.save(settings.enrollment_path)
    if pin is None:
        click.echo(
            f"trusting the host's certificate sha256:{enrollment.cert_sha256} from now "
            "on (pass --pin to check it instead)",
            err=True,
        )
    click.echo(f"enrolled as {enrollment.device_id} with {enrollment.host_url}")
    if not settings.sync_enabled:
        click.echo("sync is still off: set sync_enabled = true in config.toml to start")


@sync.command("status")
@json_option
def status(as_json: bool) -> None:
    """Enrollment, pinned certificate and whether sync is on."""
    from edge_agent.sync import Enrollment

    settings = settings_from()
    e = Enrollment.load(settings.enrollment_path)
    info = {
        "enabled": settings.sync_enabled,
        "host_url": settings.sync_host_url or e.host_url,
        "device_id": e.device_id,
        "cert_sha256": e.cert_sha256,
        "expires": datetime.fromtimestamp(e.expires_at).isoformat(timespec="seconds"),
    }
    if as_json:
        echo_json(info)
        return
    for name, value in info.items():
        click.echo(f"{name}: {value}")
