"""`edge-agent profile` and `edge-agent models`: the device, the catalog, the store."""

from __future__ import annotations

from typing import Any

import click

from edge_agent.cli._common import echo_json, json_option, model_options, plan_for, settings_from


@click.command()
@model_options
@json_option
def profile(as_json: bool, **flags: Any) -> None:
    """Show the detected device, the model it would run, and why (nothing loads)."""
    plan, _ = plan_for(settings_from(**flags))
    data = plan.to_dict()
    if as_json:
        echo_json(data)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in data.items():
        if key not in ("why", "machine"):
            table.add_row(key, str(value))
    for key, value in data["machine"].items():
        table.add_row(f"machine.{key}", str(value))
    console = Console()
    console.print(table)
    console.print("[bold]why[/bold]")
    for reason in data["why"]:
        console.print(f"  • {reason}")


# -- models -------------------------------------------------------------------------------
@click.group()
def models() -> None:
    """The model catalog and the local store."""


@models.command("list")
@click.option("--profile", default=None, help="device profile name, or 'auto'")
@json_option
def models_list(as_json: bool, profile: str | None) -> None:
    """Every catalog model, whether it is on this device and whether it fits."""
    from edge_agent.models.catalog import load_catalog
    from edge_agent.models.plan import assess_catalog, resolve_device
    from edge_agent.models.store import ModelStore

    settings = settings_from(profile=profile)
    store = ModelStore(settings.models_dir, offline=settings.is_offline)
    rows = [
        _model_row(c)
        for c in assess_catalog(settings, load_catalog(), store, resolve_device(settings))
    ]
    if as_json:
        echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "params", "quant", "size MB", "RAM MB @ctx", "fits", "local", "license")
    for r in rows:
        table.add_row(
            r["name"],
            f"{r['parameters'] / 1e6:.0f}M",
            r["quantization"],
            f"{r['file_size_mb']:.0f}{'~' if r['size_estimated'] else ''}",
            f"{r['ram_mb']:.0f} @{r['context_size']}",
            "yes" if r["fits"] else "no",
            "yes" if r["available"] else "-",
            r["license"],
        )
    Console().print(table)


def _model_row(c: Any) -> dict[str, Any]:
    e = c.entry
    return {
        "name": e.name,
        "family": e.family,
        "base_model": e.base_model,
        "parameters": e.parameters,
        "quantization": e.quantization,
        "file_size_mb": e.file_size_mb,
        "size_estimated": e.size_estimated,
        "license": e.license,
        "source": e.source.model_dump(exclude_none=True),
        "context_size": c.context_size,
        "ram_mb": round(c.ram_mb),
        "fits": c.fits,
        "available": c.available,
    }


@models.command("pull")
@click.argument("name")
def models_pull(name: str) -> None:
    """Fetch a catalog model into the local store and verify it."""
    from edge_agent.models.catalog import load_catalog
    from edge_agent.models.store import ModelStore

    settings = settings_from()
    store = ModelStore(settings.models_dir, offline=settings.is_offline)
    path = store.pull(load_catalog().get(name))
    click.echo(f"{name}: {path}")
