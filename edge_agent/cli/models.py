"""`edge-agent profile` and `edge-agent models`: the device, the catalog, the store."""

from __future__ import annotations

from typing import Any

import click

from edge_agent.cli._common import echo_json, json_option, model_options, settings_from


@click.command()
@model_options
@json_option
@click.option(
    "--measure", is_flag=True, help="also load the model here and report the real resident memory"
)
def profile(as_json: bool, measure: bool, **flags: Any) -> None:
    """Show the detected device, the model it would run, and why (nothing loads), with the
    estimated resident memory by part; --measure loads it to check the estimate."""
    from edge_agent.models.catalog import load_catalog
    from edge_agent.models.plan import make_plan
    from edge_agent.models.store import ModelStore
    from edge_agent.runtime import skills_need

    settings = settings_from(**flags)
    store = ModelStore(settings.models_dir, offline=settings.is_offline)
    plan = make_plan(settings, load_catalog(), store, need=skills_need(settings))
    data = plan.to_dict()
    if measure:
        data["measured_mb"] = _measure(settings)
    if as_json:
        echo_json(data)
        return
    _print_profile(data)


def _print_profile(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in data.items():
        if key not in ("why", "machine", "memory_mb", "measured_mb"):
            table.add_row(key, str(value))
    for key, value in data["machine"].items():
        table.add_row(f"machine.{key}", str(value))
    console = Console()
    console.print(table)
    console.print("[bold]memory (estimated MB)[/bold]")
    console.print("  " + _memory_line(data["memory_mb"]))
    if "measured_mb" in data:
        m = data["measured_mb"]
        console.print(
            f"  measured: {m['before_load']:.0f} MB before loading, {m['after_load']:.0f} after "
            f"loading, {m['after_first_token']:.0f} after one token (peak {m['peak']:.0f})"
        )
    console.print("[bold]why[/bold]")
    for reason in data["why"]:
        console.print(f"  • {reason}")


_PARTS = {"weights": "weights (mmapped file)", "kv_cache": "KV cache",
          "compute_buffers": "compute buffers", "runtime": "Python runtime"}  # fmt: skip


def _memory_line(parts: dict[str, float]) -> str:
    shown = " + ".join(f"{label} {parts[key]:.0f}" for key, label in _PARTS.items())
    return f"{shown} = {parts['total']:.0f}"


def _measure(settings: Any) -> dict[str, float]:
    """Resident memory of this process before and after loading the model as `run` does, and
    after one generated token (llama.cpp touches the mmapped weights on the first pass)."""
    from edge_agent.backends.base import GenerationRequest
    from edge_agent.runtime import open_runtime
    from edge_agent.types import Message

    before = _rss_mb()
    with open_runtime(settings) as rt:
        loaded = _rss_mb()
        hello = GenerationRequest(messages=[Message(role="user", content="hi")], max_tokens=1)
        for _ in rt.backend.generate(hello):
            pass
        first = _rss_mb()
    return {"before_load": before, "after_load": loaded, "after_first_token": first,
            "peak": _peak_rss_mb()}  # fmt: skip


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / (1024 * 1024)


def _peak_rss_mb() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


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
