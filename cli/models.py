"""``imagesearch models``: model files for offline use."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Model files: build small offline models.", no_args_is_help=True)


@app.command("tiny")
def tiny(folder: Path = typer.Argument(..., help="Where to write clip/ and captioner/."), seed: int = 0) -> None:
    """Write small UNTRAINED models (random weights) in production formats, for offline plumbing tests."""
    from imagesearch.dev.tiny_models import UNTRAINED_NOTE, build_tiny_models

    clip_dir, captioner_dir = build_tiny_models(folder, seed)
    typer.echo(f"{UNTRAINED_NOTE}\nIMAGESEARCH_CLIP_MODEL_DIR={clip_dir}\nIMAGESEARCH_CAPTIONER_DIR={captioner_dir}")
