"""``imagesearch profiles``: the search profiles (fusion + relevance calibration) ``eval --tune`` fits."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from imagesearch.profiles import ProfileStore, SearchProfile
from wiring import build_services

app = typer.Typer(help="Search profiles: hybrid fusion and relevance calibration per pair of models.",
                  no_args_is_help=True)


def describe(summary: Mapping[str, Any]) -> str:
    """One line of a :meth:`SearchProfile.summary` (``profiles list`` and ``status`` print the same)."""
    fusion = summary["fusion"]
    weights = ", ".join(f"{k} {v:g}" for k, v in fusion["weights"].items())
    return (f"{summary['clip']} + {summary['captioner']}: {fusion['method']} ({weights}); relevance for "
            f"{', '.join(summary['calibrated_modes']) or 'no mode'}; fitted {summary.get('fitted_at', '?')} "
            f"on {summary.get('dataset', '?')}")


def _profiles() -> ProfileStore:
    return build_services().profiles


@app.command("list")
def list_profiles(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The saved profiles, one per CLIP model and captioner they were fitted for."""
    summaries = [p.summary() for p in _profiles().all()]
    if as_json:
        typer.echo(json.dumps(summaries))
        return
    if not summaries:
        typer.echo("no search profiles (fit one with: imagesearch eval DATASET --tune)")
    for s in summaries:
        typer.echo(describe(s))


@app.command("load")
def load(path: Path = typer.Argument(..., exists=True, dir_okay=False,
                                     help="A profile.json from eval --tune.")) -> None:
    """Save a profile where every API process reads it (within IMAGESEARCH_PROFILE_REFRESH_S)."""
    try:
        profile = SearchProfile.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(f"{path} is not a search profile: {exc}") from None
    _profiles().save(profile)
    typer.echo(f"loaded the profile for {profile.clip} + {profile.captioner}")


@app.command("delete")
def delete(clip: str = typer.Option(..., help="The CLIP identity (as `list` shows it)."),
           captioner: str = typer.Option(..., help="The captioner identity.")) -> None:
    """Remove a profile: hybrid falls back to the fusion settings, and relevance to null."""
    if not _profiles().delete(clip, captioner):
        typer.echo("no such profile", err=True)
        raise typer.Exit(1)
    typer.echo("deleted")
