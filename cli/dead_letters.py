"""``imagesearch dead-letters``: images whose processing killed the worker repeatedly."""

from __future__ import annotations

import json

import typer

from wiring import build_services

app = typer.Typer(help="Images whose processing killed the worker repeatedly.", no_args_is_help=True)


@app.command("list")
def list_dead_letters(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List dead letters: stage, image id, why, when."""
    entries = build_services().ledger.dead_letters()
    if as_json:
        typer.echo(json.dumps(entries))
        return
    for e in entries:
        typer.echo(f"{e['stage']:<8} {e['id']}  {e['reason']}")
    typer.echo(f"{len(entries)} dead letter(s)")


@app.command("redrive")
def redrive(ids: list[str] = typer.Argument(None, help="Image ids (default: all).")) -> None:
    """Queue dead letters again (after fixing what killed the worker)."""
    svc = build_services()
    typer.echo(f"re-queued {len(svc.ledger.redrive(svc.queue, ids))} image(s)")
