"""`edge-agent quantize`: build and measure GGUF and ONNX variants of a base model (needs the
`[host]` and `[onnx]` extras: transformers dequantizes, onnxruntime-genai builds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edge_agent.cli._common import echo_json, json_option, settings_from
from edge_agent.errors import QuantizeError


@click.command("quantize")
@click.argument("base", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="output folder (default: <data dir>/variants/<base name>)",
)
@click.option(
    "--variants",
    default=None,
    help="comma-separated, e.g. q8_0,q4_k_m,onnx-int4 (default: f16,q8_0,q4_k_m,q4_0,onnx-int8,"
    "onnx-int4)",
)
@click.option("--no-measure", is_flag=True, help="build only: no size/RAM/speed/accuracy")
@click.option("--rows", type=int, default=40, show_default=True, help="HA test rows to score")
@click.option("--threads", type=int, default=1, show_default=True)
@json_option
def quantize(base: Path | None, out: Path | None, variants: str | None, **options: Any) -> None:
    """Make catalog variants of BASE (a GGUF or a Hugging Face folder; default: the default
    model), measure each, and write variants.json and catalog.toml in the output folder."""
    pipeline = _pipeline()
    source = base or _default_model()
    results = pipeline.run(
        source,
        out or Path(settings_from().data_dir) / "variants" / source.stem,
        [v.strip() for v in variants.split(",")] if variants else pipeline.DEFAULT_VARIANTS,
        measure_them=not options["no_measure"],
        rows=options["rows"],
        threads=options["threads"],
        progress=not options["as_json"],
    )
    if options["as_json"]:
        echo_json({"variants": [r.to_dict() for r in results]})
        return
    from quantize.report import markdown_table

    click.echo(markdown_table(results))


def _pipeline() -> Any:
    try:
        from quantize import pipeline
    except ImportError as exc:
        raise QuantizeError(
            f"edge-agent quantize needs the host and onnx extras ({exc.name} is missing): "
            "pip install 'edge-agent[host,onnx]'"
        ) from exc
    return pipeline


def _default_model() -> Path:
    from edge_agent.models.catalog import load_catalog
    from edge_agent.models.store import ModelStore

    settings = settings_from()
    path: Path = ModelStore(settings.models_dir, offline=True).ensure(load_catalog().default())
    return path
