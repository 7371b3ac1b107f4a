"""``imagesearch models``: the model catalogue, and model folders for offline use."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Models: the catalogue, offline folders, small test models.", no_args_is_help=True)


@app.command("list")
def list_models(markdown: bool = typer.Option(False, help="Print the table as docs/models.md holds it.")) -> None:
    """Print the catalogue: which model per language and budget, published recall, measured costs."""
    from rich.console import Console
    from rich.table import Table

    from imagesearch.models.catalogue import CATALOGUE, markdown_table

    if markdown:
        typer.echo(markdown_table())
        return

    table = Table(title="imagesearch model catalogue (docs/models.md)", show_lines=False)
    for column in ("name", "role", "languages", "recall en/zh %", "dim", "MiB", "ms/image", "ms/query",
                   "choose when"):
        table.add_column(column, overflow="fold")
    for entry in CATALOGUE:
        measured = entry.measured()
        recall = "/".join(f"{entry.recall[k]:.1f}" if k in entry.recall else "-" for k in ("en", "zh"))
        table.add_row(entry.name, entry.role, entry.languages, recall if entry.recall else "-",
                      str(measured.get("dim", "-")), str(measured.get("rss_mib", "-")),
                      str(measured.get("ms_per_image", "-")), str(measured.get("ms_per_query", "-")),
                      entry.choose_when)
    Console(width=200).print(table)
    typer.echo("Recall: published (Immich's Crossmodal-3600 table; Chinese-CLIP: MUGE). Costs: measured here, "
               "2 CPU cores, fp32, random weights of the same architecture (bench/models.py).")
    typer.echo("Select one with the variables in docs/models.md, e.g. IMAGESEARCH_CLIP_MODEL=ViT-B-32 "
               "IMAGESEARCH_CLIP_PRETRAINED=laion2b_s34b_b79k.")


@app.command("download")
def download(
    name: str = typer.Argument(..., help="arch/tag, hf-hub:org/name, transformers:org/name or a captioner org/name."),
    to: Path = typer.Option(..., "--to", help="A new, empty folder."),
) -> None:
    """Save a model from the hub (or the local cache) as a folder the *_DIR settings load, then check it."""
    from imagesearch.errors import ImageSearchError
    from imagesearch.models.download import download as save

    try:
        saved = save(name, to)
    except ImageSearchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"saved {name} to {saved.folder} (reloaded from the folder: max difference {saved.max_difference:.1e})")
    typer.echo(saved.environment)


@app.command("tiny")
def tiny(folder: Path = typer.Argument(..., help="Where to write clip/ and captioner/."), seed: int = 0) -> None:
    """Write small UNTRAINED models (random weights) in production formats, for offline plumbing tests."""
    from imagesearch.dev.tiny_models import UNTRAINED_NOTE, build_tiny_models

    clip_dir, captioner_dir = build_tiny_models(folder, seed)
    typer.echo(f"{UNTRAINED_NOTE}\nIMAGESEARCH_CLIP_MODEL_DIR={clip_dir}\nIMAGESEARCH_CAPTIONER_DIR={captioner_dir}")
