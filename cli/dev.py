"""``imagesearch dev``: generated data to try the service with (development tooling, not the service)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Development tools: generated data to try the service with.", no_args_is_help=True)


@app.command("products")
def products(folder: Path = typer.Argument(..., file_okay=False, help="Folder to write the catalogue into."),
             n: int = typer.Option(1000, "--n", min=1, help="How many products."),
             seed: int = typer.Option(0, help="The same seed writes the same products.")) -> None:
    """Write N product images, each with a sidecar JSON: Chinese and English title, tags, brand, price, stock, date."""
    from imagesearch.dev.products import ATTRIBUTES, write_catalogue

    written = write_catalogue(folder, n, seed)
    typer.echo(f"wrote {len(written)} products (and their .json sidecars) to {folder}")
    typer.echo(f"load them with: IMAGESEARCH_ATTRIBUTES={ATTRIBUTES} imagesearch backfill {folder} "
               "--collection catalogue")
