"""Commands that query: ``search`` (through a running API) and ``eval`` (recall on a labelled set)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from imagesearch.config import get_settings
from imagesearch.vocab import SearchMode


def search(text: str = typer.Argument(..., help="What to look for."),
           mode: SearchMode = typer.Option(SearchMode.IMAGE, help="Which scheme ranks the hits."),
           k: int = typer.Option(10, min=1, max=100),
           collection: Optional[str] = typer.Option(None),
           api: str = typer.Option("http://127.0.0.1:8000", envvar="IMAGESEARCH_API_URL",
                                   help="API base URL.")) -> None:
    """Search through the running API and print the hits."""
    import requests

    body: dict[str, object] = {"text": text, "mode": str(mode), "k": k}
    if collection:
        body["collection"] = collection
    response = requests.post(f"{api}/v1/search", json=body, timeout=60)
    if response.status_code != 200:
        typer.echo(response.text, err=True)
        raise typer.Exit(1)
    _print_hits(text, response.json())


def evaluate(dataset: Optional[Path] = typer.Argument(None, help="Folder with images/ and queries.jsonl or "
                                                                 "captions.jsonl."),
             procedural: int = typer.Option(0, help="Instead of DATASET: generate a held-out procedural set "
                                                    "of this many images."),
             seed: int = typer.Option(2, help="Seed of the procedural set (the demo models were trained on seed 1)."),
             api: Optional[str] = typer.Option(None, help="Evaluate a running API instead of starting one."),
             out: Path = typer.Option(Path("eval-report"), help="Folder for report.json and chart.png."),
             modes: str = typer.Option(",".join(SearchMode), help="Comma-separated modes."),
             tune: bool = typer.Option(False, "--tune", help="Fit hybrid fusion weights and relevance calibration on "
                                       "half the queries, save them for these models (the API applies them), and "
                                       "report the other half."),
             profile: Optional[Path] = typer.Option(None, help="A profile.json an earlier --tune wrote: measure "
                                                    "without it, apply it, and measure again.")) -> None:
    """Index a labelled set through the real pipeline and report Recall@1/5/10, MRR, nDCG@10 and latency,
    per mode over all queries and per query language (a procedural set has English and Chinese queries).
    With a relevance calibration, also its expected calibration error (ECE) and the precision of the
    hits whose relevance is at least 0.5 (P@.5)."""
    from imagesearch.dev import evaluate as ev
    from imagesearch.dev.client import ApiClient
    from imagesearch.profiles import ProfileStore, SearchProfile
    from imagesearch.redis_state import Keyspace, connect

    settings = get_settings()
    if procedural:
        from imagesearch.dev import world

        # Written afresh every time (a second or two for 500 images): a folder left by an older
        # version would lack the Chinese queries, and the set is a pure function of the seed anyway.
        dataset = settings.data_dir.resolve() / f"eval-world-{seed}-{procedural}"
        world.write_dataset(dataset, procedural, seed)
    if dataset is None:
        raise typer.BadParameter("give a DATASET folder or --procedural N")
    labelled = ev.load_labelled_set(dataset)
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    if not set(chosen) <= set(SearchMode):
        raise typer.BadParameter(f"modes must be among {', '.join(SearchMode)}")
    if (tune or profile) and set(chosen) != set(SearchMode):
        raise typer.BadParameter("--tune and --profile need every mode")
    if tune and profile:
        raise typer.BadParameter("give --tune or --profile, not both")
    given = SearchProfile.from_json(json.loads(profile.read_text())) if profile else None
    collection = f"eval-{uuid.uuid4().hex[:8]}"
    out.mkdir(parents=True, exist_ok=True)
    typer.echo(f"{len(labelled.images)} images, {len(labelled.queries)} queries from {dataset}")
    saved: list[SearchProfile] = []

    def progress(done: int, total: int) -> None:
        typer.echo(f"\r  indexed: {done}/{total}", nl=False)

    def run(base: str, keys: Keyspace, *, keep: bool) -> ev.Report:
        """``keep``: leave the saved profile in Redis (a running deployment's); a stack this
        command started is gone afterwards, and profile.json is what remains of it."""
        profiles = ProfileStore(connect(settings.redis.url, timeout=10), keys)

        def save(fitted: SearchProfile) -> None:
            if given is None:  # a tuned profile is named after the set it was fitted on
                fitted = replace(fitted, fitted={**fitted.fitted, "dataset": dataset.name})
            profiles.save(fitted)
            saved.append(fitted)

        try:
            return ev.run(ApiClient(base), labelled, collection, chosen, progress, tune=tune, profile=given,
                          save_profile=save, default_fusion=settings.search.fusion(),
                          lists_out=out / "lists.jsonl" if tune else None)
        finally:
            if not keep:
                for profile in saved:
                    profiles.delete(profile.clip, profile.captioner)

    if api:
        report = run(api, settings.keys, keep=True)
    else:
        from imagesearch.dev import procs
        from imagesearch.dev.demo import stack_env

        data_dir = settings.data_dir.resolve() / "eval"
        env, label = stack_env(data_dir)
        typer.echo(f"models: {label}")
        with procs.local_stack(env, data_dir / "logs") as base:
            report = run(base, Keyspace(env.get("IMAGESEARCH_REDIS_NAMESPACE", "")), keep=False)
    typer.echo("")
    typer.echo(ev.render_table(report))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2))
    if tune and saved:
        (out / "profile.json").write_text(json.dumps(saved[-1].to_json(), indent=2))
        where = "in the API's Redis" if api else "while the stack ran"
        typer.echo(f"saved the search profile for {saved[-1].clip} + {saved[-1].captioner} {where}, and wrote "
                   f"{out / 'profile.json'} (install it elsewhere with: imagesearch profiles load)")
    ev.write_chart(report, out / "chart.png")
    typer.echo(f"wrote {out / 'report.json'} and {out / 'chart.png'}")


def _print_hits(query: str, body: dict) -> None:
    typer.echo(f'"{query}"  ({body["mode"]} mode, {body["took_ms"]:.0f} ms)')
    if not body["hits"]:
        typer.echo("    (no hits)")
    for rank, hit in enumerate(body["hits"], start=1):
        typer.echo(f"  {rank:>2}. {hit['score']:+.3f}  {hit['caption'] or '':<48} {hit['source']}")


def register(app: typer.Typer) -> None:
    app.command()(search)
    app.command("eval")(evaluate)
