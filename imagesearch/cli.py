"""The ``imagesearch`` command line.

Process-starting commands exec the real servers (gunicorn, celery) so the CLI itself stays free of
Flask and Celery; operations talk to the API over HTTP or to the store directly.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from imagesearch.config import get_settings

app = typer.Typer(help="Semantic image search: index images with CLIP and captions, search them by meaning.",
                  no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="Model files: build small offline models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
keys_app = typer.Typer(help="API keys: each maps to a tenant and scopes; stored hashed.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
dead_app = typer.Typer(help="Images whose processing killed the worker repeatedly.", no_args_is_help=True)
app.add_typer(dead_app, name="dead-letters")


def _exec(args: list[str]) -> None:
    """Replace this process, so signals from the process manager reach the server directly."""
    os.execvp(args[0], args)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to bind."),
          port: int = typer.Option(int(os.environ.get("PORT", 8000)), help="Port (default $PORT or 8000)."),
          workers: int = typer.Option(2, help="gunicorn worker processes."),
          threads: int = typer.Option(4, help="Threads per worker.")) -> None:
    """Run the HTTP API under gunicorn. Bound to a loopback address, API keys are optional by default."""
    os.environ["IMAGESEARCH_BIND_HOST"] = host
    _exec([sys.executable, "-m", "gunicorn", "api.wsgi:app", "-b", f"{host}:{port}", "-w", str(workers),
           "--threads", str(threads), "--timeout", "120", "--access-logfile", "-"])


@app.command()
def worker(stage: str = typer.Argument(..., help="embed or caption"),
           concurrency: int = typer.Option(1, help="Worker processes (each loads its own model).")) -> None:
    """Run a Celery worker for one stage's queue."""
    if stage not in ("embed", "caption"):
        raise typer.BadParameter("stage must be embed or caption")
    queue = get_settings().queue(stage)
    _exec([sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", queue, "-c", str(concurrency),
           "-n", f"{stage}@%h", "--loglevel", "INFO"])


@app.command()
def search(text: str = typer.Argument(..., help="What to look for."),
           mode: str = typer.Option("image", help="image | caption | hybrid"),
           k: int = typer.Option(10, min=1, max=100),
           collection: Optional[str] = typer.Option(None),
           api: str = typer.Option("http://127.0.0.1:8000", envvar="IMAGESEARCH_API_URL", help="API base URL.")) -> None:
    """Search through the running API and print the hits."""
    import requests

    body = {"text": text, "mode": mode, "k": k}
    if collection:
        body["collection"] = collection
    response = requests.post(f"{api}/v1/search", json=body, timeout=60)
    if response.status_code != 200:
        typer.echo(response.text, err=True)
        raise typer.Exit(1)
    _print_hits(text, response.json())


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON."),
           failures: int = typer.Option(10, help="How many of the latest failures to list.")) -> None:
    """Records per status, messages waiting per queue, dead letters, and the latest failures."""
    from imagesearch.stores import open_store

    settings = get_settings()
    store = open_store(settings)
    report: dict = {"store": store.counts()}
    try:
        from workers.deliveries import DeliveryLedger
        from workers.enqueue import queue_depths

        report["queues"] = queue_depths()
        report["dead_letters"] = len(DeliveryLedger.from_settings(settings).dead_letters())
    except Exception as exc:  # noqa: BLE001 - the broker being down is a status, not a crash
        report["queues"] = f"unavailable: {exc}"
    failed = sorted((r for r in store.iter_records() if r.status == "failed" or r.caption_status == "failed"),
                    key=lambda r: r.updated_at, reverse=True)[:failures]
    report["latest_failures"] = [{"id": r.id, "source": r.source, "error": r.error} for r in failed]
    if as_json:
        typer.echo(json.dumps(report))
        return
    for section in ("store", "queues"):
        values = report[section]
        typer.echo(f"{section}: " + (", ".join(f"{k}={v}" for k, v in values.items()) if isinstance(values, dict)
                                     else str(values)))
    typer.echo(f"dead letters: {report.get('dead_letters', '?')}")
    for failure in report["latest_failures"]:
        typer.echo(f"  failed {failure['id']}  {failure['source']}: {failure['error']}")


@app.command()
def demo(images: int = typer.Option(60, help="How many sample images to index."),
         query: list[str] = typer.Option([], "--query", "-q", help="Queries to run (repeatable)."),
         keep_running: bool = typer.Option(False, help="Leave the API and workers running afterwards."),
         port: int = typer.Option(0, help="API port (0: a free one).")) -> None:
    """Start the API and both workers, index sample images, and print search results."""
    from imagesearch.demo import run_demo

    raise typer.Exit(run_demo(images=images, queries=query, keep_running=keep_running, port=port))


@app.command("eval")
def evaluate(dataset: Optional[Path] = typer.Argument(None, help="Folder with images/ and queries.jsonl or "
                                                                 "captions.jsonl."),
             procedural: int = typer.Option(0, help="Instead of DATASET: generate a held-out procedural set "
                                                    "of this many images."),
             seed: int = typer.Option(2, help="Seed of the procedural set (the demo models were trained on seed 1)."),
             api: Optional[str] = typer.Option(None, help="Evaluate a running API instead of starting one."),
             out: Path = typer.Option(Path("eval-report"), help="Folder for report.json and chart.png."),
             modes: str = typer.Option("image,caption,hybrid", help="Comma-separated modes.")) -> None:
    """Index a labelled set through the real pipeline and report Recall@1/5/10, MRR, nDCG@10 and latency."""
    import uuid

    from imagesearch import evaluate as ev
    from imagesearch.client import ApiClient

    settings = get_settings()
    if procedural:
        dataset = settings.data_dir.resolve() / f"eval-world-{seed}-{procedural}"
        if not (dataset / "queries.jsonl").is_file():
            from imagesearch import world

            world.write_dataset(dataset, procedural, seed)
    if dataset is None:
        raise typer.BadParameter("give a DATASET folder or --procedural N")
    labelled = ev.load_labelled_set(dataset)
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    if not set(chosen) <= set(ev.MODES):
        raise typer.BadParameter(f"modes must be among {', '.join(ev.MODES)}")
    collection = f"eval-{uuid.uuid4().hex[:8]}"
    typer.echo(f"{len(labelled.images)} images, {len(labelled.queries)} queries from {dataset}")

    def progress(done: int, total: int) -> None:
        typer.echo(f"\r  indexed: {done}/{total}", nl=False)

    if api:
        report = ev.run(ApiClient(api), labelled, collection, chosen, progress)
    else:
        from imagesearch import procs
        from imagesearch.demo import stack_env

        data_dir = settings.data_dir.resolve() / "eval"
        env, label = stack_env(data_dir)
        typer.echo(f"models: {label}")
        with procs.local_stack(env, data_dir / "logs") as base:
            report = ev.run(ApiClient(base), labelled, collection, chosen, progress)
    typer.echo("")
    typer.echo(ev.render_table(report))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2))
    ev.write_chart(report, out / "chart.png")
    typer.echo(f"wrote {out / 'report.json'} and {out / 'chart.png'}")


@app.command()
def backfill(source: str = typer.Argument(..., help="s3://bucket/prefix or a local folder."),
             collection: Optional[str] = typer.Option(
                 None, help="Collection (default: IMAGESEARCH_S3_COLLECTION for S3, 'default' for a folder)."),
             wait: bool = typer.Option(True, "--wait/--no-wait", help="After enqueueing, wait for the workers."),
             restart: bool = typer.Option(False, "--restart", help="Ignore the checkpoint of an interrupted run."),
             requeue: bool = typer.Option(False, "--requeue",
                                          help="Send images still queued with the same content again.")) -> None:
    """Enqueue every image of an S3 prefix or a folder not indexed yet; Ctrl-C and run again to resume."""
    import time

    from tqdm import tqdm

    from imagesearch.backfill import count_done, run_backfill
    from imagesearch.blobs import open_blobs
    from imagesearch.s3ingest import RedisEventLog
    from imagesearch.stores import open_store
    from workers.enqueue import enqueue_embed  # imported here: the CLI module stays free of Celery

    settings = get_settings()
    store, blobs = open_store(settings), open_blobs(settings)
    enqueued = tqdm(desc="enqueued", unit="img", position=0, dynamic_ncols=True)
    completed = tqdm(desc="completed", unit="img", total=0, position=1, dynamic_ncols=True)
    pending: dict[str, None] = {}
    checked = [0.0]

    def check_completed(force: bool = False) -> None:
        if not pending or (not force and time.monotonic() - checked[0] < 2.0):
            return
        checked[0] = time.monotonic()
        done, _ = count_done(store, list(pending)[:2000])
        for image_id in done:
            pending.pop(image_id, None)
        completed.update(len(done))

    def on_item(stats) -> None:
        enqueued.set_postfix(listed=stats.listed, unchanged=stats.unchanged, failed=stats.failed,
                             skipped=stats.skipped, refresh=False)
        for image_id in stats.queued_ids[enqueued.n:]:
            pending[image_id] = None
            enqueued.update(1)
            completed.total += 1
        check_completed()

    try:
        stats = run_backfill(source, settings=settings, store=store, blobs=blobs, enqueue=enqueue_embed,
                             event_log=RedisEventLog.from_settings(settings), collection=collection,
                             restart=restart, requeue=requeue, on_item=on_item)
    except KeyboardInterrupt:
        enqueued.close(), completed.close()
        typer.echo("interrupted: run the same command again to continue where it stopped", err=True)
        raise typer.Exit(130)
    except ValueError as exc:
        enqueued.close(), completed.close()
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    enqueued.refresh()
    try:
        while wait and pending:
            check_completed(force=True)
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    check_completed(force=True)
    enqueued.close(), completed.close()
    if stats.resumed_after:
        typer.echo(f"resumed after {stats.resumed_after!r}")
    typer.echo(f"{stats.source}: listed {stats.listed}, enqueued {stats.queued}, unchanged {stats.unchanged}, "
               f"failed {stats.failed}, skipped {stats.skipped}, completed {completed.n}, "
               f"still in progress {len(pending)}")


@app.command()
def reconcile(source: str = typer.Argument(..., help="s3://bucket/prefix or a local folder."),
              collection: Optional[str] = typer.Option(None, help="The collection the folder fills (folders)."),
              dry_run: bool = typer.Option(False, "--dry-run", help="Only report the orphans.")) -> None:
    """Compare a source with the index: queue what is missing or stuck, remove what is orphaned."""
    from imagesearch import reconcile as rc
    from imagesearch.blobs import open_blobs
    from imagesearch.s3ingest import RedisEventLog
    from imagesearch.stores import open_store
    from workers.enqueue import enqueue_embed

    settings = get_settings()
    try:
        report = rc.reconcile(source, settings=settings, store=open_store(settings), blobs=open_blobs(settings),
                              enqueue=enqueue_embed, event_log=RedisEventLog.from_settings(settings),
                              collection=collection, dry_run=dry_run)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    typer.echo(f"orphans: {len(report.orphans)} ({'not removed: dry run' if dry_run else f'{report.removed} removed'})")
    if report.backfill is not None:
        b = report.backfill
        typer.echo(f"source: listed {b.listed}, queued {b.queued}, unchanged {b.unchanged}, failed {b.failed}, "
                   f"skipped {b.skipped}")


@app.command()
def reindex(batch_size: int = typer.Option(64, help="Images per model batch (OpenSearch).")) -> None:
    """Re-embed every image with the configured models after a model change.

    OpenSearch: builds a new index while the old one serves, then swaps the aliases atomically.
    Embedded store: queues every image whose vector is from another model (a rolling re-embed).
    """
    from imagesearch import reindex as rx
    from imagesearch.blobs import open_blobs
    from imagesearch.models import get_captioner, get_clip
    from imagesearch.stores import open_store

    settings = get_settings()
    store = open_store(settings)
    clip = get_clip(settings)
    if settings.store == "embedded":
        from workers.enqueue import enqueue_embed

        ids = rx.stale_ids(store, clip.identity)
        for image_id in ids:
            enqueue_embed(image_id)
        typer.echo(f"queued {len(ids)} images for re-embedding with {clip.identity}")
        return
    report = rx.reindex_aliased(store, settings=settings, blobs=open_blobs(settings), clip=clip,
                                captioner=lambda: get_captioner(settings), batch_size=batch_size,
                                progress=lambda r: typer.echo(f"\r  copied {r.copied}", nl=False))
    typer.echo(f"\nswapped the aliases to {report.index}: {report.embedded} embedded, {len(report.failed)} failed, "
               f"{report.caught_up} caught up, {report.removed} removed, {report.seconds:.0f} s")


@keys_app.command("create")
def keys_create(tenant: str = typer.Option(..., help="Tenant whose images this key reads and writes."),
                name: str = typer.Option(..., help="A label, e.g. the client's name."),
                admin: bool = typer.Option(False, help="Also allow operator endpoints (dead letters)."),
                read_only: bool = typer.Option(False, help="Search and read only.")) -> None:
    """Create a key and print it (shown once; only its hash is kept)."""
    from imagesearch.apikeys import KeyRing

    scopes = ("read",) if read_only else ("read", "write")
    key = KeyRing.from_settings(get_settings()).create(name, tenant, scopes + (("admin",) if admin else ()))
    typer.echo(key)


@keys_app.command("list")
def keys_list() -> None:
    """Keys by hash prefix, name, tenant and scopes."""
    from imagesearch.apikeys import KeyRing

    for key in KeyRing.from_settings(get_settings()).list():
        typer.echo(f"{key.key_hash[:12]}  {key.name:<20} tenant={key.tenant:<16} scopes={','.join(key.scopes)}")


@keys_app.command("revoke")
def keys_revoke(hash_prefix: str = typer.Argument(..., help="The first characters (8+) of the key's hash.")) -> None:
    """Revoke a key; every API process refuses it from the next request on."""
    from imagesearch.apikeys import KeyRing

    typer.echo(f"revoked {KeyRing.from_settings(get_settings()).revoke(hash_prefix)} key(s)")


@dead_app.command("list")
def dead_letters_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List dead letters: stage, image id, why, when."""
    from workers.deliveries import DeliveryLedger

    entries = DeliveryLedger.from_settings(get_settings()).dead_letters()
    if as_json:
        typer.echo(json.dumps(entries))
        return
    for e in entries:
        typer.echo(f"{e['stage']:<8} {e['id']}  {e['reason']}")
    typer.echo(f"{len(entries)} dead letter(s)")


@dead_app.command("redrive")
def dead_letters_redrive(ids: list[str] = typer.Argument(None, help="Image ids (default: all)."),
                         ) -> None:
    """Queue dead letters again (after fixing what killed the worker)."""
    from workers.deliveries import DeliveryLedger
    from workers.enqueue import enqueue

    ledger = DeliveryLedger.from_settings(get_settings())
    wanted = set(ids or [])
    count = 0
    for entry in ledger.dead_letters():
        if wanted and entry["id"] not in wanted:
            continue
        if ledger.exhume(entry["stage"], entry["id"]):
            enqueue(entry["stage"], entry["id"])
            count += 1
    typer.echo(f"re-queued {count} image(s)")


@models_app.command("tiny")
def models_tiny(folder: Path = typer.Argument(..., help="Where to write clip/ and captioner/."),
                seed: int = 0) -> None:
    """Write small UNTRAINED models (random weights) in production formats, for offline plumbing tests."""
    from imagesearch.models.tiny import UNTRAINED_NOTE, build_tiny_models

    clip_dir, captioner_dir = build_tiny_models(folder, seed)
    typer.echo(f"{UNTRAINED_NOTE}\nIMAGESEARCH_CLIP_MODEL_DIR={clip_dir}\nIMAGESEARCH_CAPTIONER_DIR={captioner_dir}")


def _print_hits(query: str, body: dict) -> None:
    typer.echo(f'"{query}"  ({body["mode"]} mode, {body["took_ms"]:.0f} ms)')
    if not body["hits"]:
        typer.echo("    (no hits)")
    for rank, hit in enumerate(body["hits"], start=1):
        typer.echo(f"  {rank:>2}. {hit['score']:+.3f}  {hit['caption'] or '':<48} {hit['source']}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
