"""Operator commands over the index: ``status``, ``backfill``, ``reconcile``, ``reindex``."""

from __future__ import annotations

import json
import time
from typing import Optional

import typer

from cli.profiles import describe as describe_profile
from imagesearch.errors import ImageSearchError
from imagesearch.status import status_report
from imagesearch.vocab import Stage
from wiring import build_services


def status(as_json: bool = typer.Option(False, "--json", help="Print JSON."),
           failures: int = typer.Option(10, help="How many of the latest failures to list.")) -> None:
    """Records per status, messages waiting per queue, dead letters, and the latest failures."""
    report = status_report(build_services(), failures)
    if as_json:
        typer.echo(json.dumps(report))
        return
    for section in ("store", "queues"):
        values = report[section]
        typer.echo(f"{section}: " + (", ".join(f"{k}={v}" for k, v in values.items()) if isinstance(values, dict)
                                     else str(values)))
    typer.echo(f"dead letters: {report.get('dead_letters', '?')}")
    for profile in report.get("search_profiles", []):
        typer.echo(f"search profile for {describe_profile(profile)}")
    for failure in report["latest_failures"]:
        typer.echo(f"  failed {failure['id']}  {failure['source']}: {failure['error']}")


class _Progress:
    """Two tqdm bars: images enqueued, and of those, images the workers finished."""

    def __init__(self, store) -> None:
        from tqdm import tqdm

        self.store = store
        self.enqueued = tqdm(desc="enqueued", unit="img", position=0, dynamic_ncols=True)
        self.completed = tqdm(desc="completed", unit="img", total=0, position=1, dynamic_ncols=True)
        self.pending: dict[str, None] = {}
        self._checked = 0.0

    def on_item(self, stats) -> None:
        self.enqueued.set_postfix(listed=stats.listed, unchanged=stats.unchanged, failed=stats.failed,
                                  skipped=stats.skipped, refresh=False)
        for image_id in stats.queued_ids[self.enqueued.n:]:
            self.pending[image_id] = None
            self.enqueued.update(1)
            self.completed.total += 1
        self.check()

    def check(self, force: bool = False) -> None:
        from imagesearch.s3.backfill import count_done

        if not self.pending or (not force and time.monotonic() - self._checked < 2.0):
            return
        self._checked = time.monotonic()
        done, _ = count_done(self.store, list(self.pending)[:2000])
        for image_id in done:
            self.pending.pop(image_id, None)
        self.completed.update(len(done))

    def wait(self) -> None:
        self.enqueued.refresh()
        try:
            while self.pending:
                self.check(force=True)
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass

    def close(self) -> None:
        self.check(force=True)
        self.enqueued.close()
        self.completed.close()


def backfill(source: str = typer.Argument(..., help="s3://bucket/prefix or a local folder."),
             collection: Optional[str] = typer.Option(
                 None, help="Collection (default: IMAGESEARCH_S3_COLLECTION for S3, 'default' for a folder)."),
             wait: bool = typer.Option(True, "--wait/--no-wait", help="After enqueueing, wait for the workers."),
             restart: bool = typer.Option(False, "--restart", help="Ignore the checkpoint of an interrupted run."),
             requeue: bool = typer.Option(False, "--requeue",
                                          help="Send images still queued with the same content again.")) -> None:
    """Enqueue every image of an S3 prefix or a folder not indexed yet; Ctrl-C and run again to resume."""
    from imagesearch.s3.backfill import run_backfill

    svc = build_services()
    progress = _Progress(svc.store)
    try:
        stats = run_backfill(source, settings=svc.settings, store=svc.store, blobs=svc.blobs,
                             enqueue=svc.enqueue_embed, event_log=svc.event_log, collection=collection,
                             restart=restart, requeue=requeue, on_item=progress.on_item)
    except KeyboardInterrupt:
        progress.close()
        typer.echo("interrupted: run the same command again to continue where it stopped", err=True)
        raise typer.Exit(130) from None
    except ImageSearchError as exc:
        progress.close()
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if wait:
        progress.wait()
    progress.close()
    if stats.resumed_after:
        typer.echo(f"resumed after {stats.resumed_after!r}")
    typer.echo(f"{stats.source}: listed {stats.listed}, enqueued {stats.queued}, unchanged {stats.unchanged}, "
               f"updated {stats.updated}, failed {stats.failed}, skipped {stats.skipped}, "
               f"completed {progress.completed.n}, still in progress {len(progress.pending)}")


def reconcile(source: str = typer.Argument(..., help="s3://bucket/prefix or a local folder."),
              collection: Optional[str] = typer.Option(None, help="The collection the folder fills (folders)."),
              dry_run: bool = typer.Option(False, "--dry-run", help="Only report the orphans.")) -> None:
    """Compare a source with the index: queue what is missing or stuck, remove what is orphaned."""
    from imagesearch.s3 import reconcile as rc

    svc = build_services()
    try:
        report = rc.reconcile(source, settings=svc.settings, store=svc.store, blobs=svc.blobs,
                              enqueue=svc.enqueue_embed, event_log=svc.event_log, collection=collection,
                              dry_run=dry_run)
    except ImageSearchError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"orphans: {len(report.orphans)} ({'not removed: dry run' if dry_run else f'{report.removed} removed'})")
    if report.backfill is not None:
        b = report.backfill
        typer.echo(f"source: listed {b.listed}, queued {b.queued}, unchanged {b.unchanged}, failed {b.failed}, "
                   f"skipped {b.skipped}")


def reindex(batch_size: int = typer.Option(64, help="Images per model batch (OpenSearch).")) -> None:
    """Re-embed every image with the configured models after a model change.

    OpenSearch: builds a new index while the old one serves, then swaps the aliases atomically.
    Embedded store: queues every image whose vector is from another model (a rolling re-embed).
    """
    from imagesearch import reindex as rx

    svc = build_services()
    if svc.settings.storage.backend == "embedded":
        ids = rx.stale_ids(svc.store, svc.clip.identity)
        for image_id in ids:
            svc.queue.enqueue(Stage.EMBED, image_id)
        typer.echo(f"queued {len(ids)} images for re-embedding with {svc.clip.identity}")
        return
    report = rx.reindex_aliased(svc.store, settings=svc.settings, blobs=svc.blobs, clip=svc.clip,
                                captioner=lambda: svc.captioner, batch_size=batch_size,
                                progress=lambda r: typer.echo(f"\r  copied {r.copied}", nl=False))
    typer.echo(f"\nswapped the aliases to {report.index}: {report.embedded} embedded, {len(report.failed)} failed, "
               f"{report.caught_up} caught up, {report.removed} removed, warmed "
               f"{report.warmed.get('successful', 0)}/{report.warmed.get('total', 0)} shards"
               f"{'' if report.replicas_ready else ' (replicas not all copied in time)'}, {report.seconds:.0f} s")
    typer.echo(f"after the swap: {report.reconciled_after_swap} copied again and {report.removed_after_swap} removed "
               f"(written to the old index since the catch-up), {report.newer_after_swap} left as written after the "
               f"swap{'' if report.old_writes_blocked is not False else '; the old index could not be write-blocked'}")


def register(app: typer.Typer) -> None:
    for command in (status, backfill, reconcile, reindex):
        app.command()(command)
