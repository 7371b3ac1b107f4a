"""``imagesearch reconcile``: make the index match its source again.

Events can be lost (a notification misconfigured for an hour, a queue purged by hand); this
compares the source with the index and repairs both directions:
- missing or changed objects, and records stuck in ``queued`` (their task was lost), are queued
  again — the backfill does this, with ``requeue`` on;
- records whose source object is gone are removed (for S3, every record under the bucket/prefix;
  for a folder, the records of the folder's collection that were created from it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from imagesearch import ingest
from imagesearch.blobs import BlobStore
from imagesearch.config import Settings
from imagesearch.records import DEFAULT_COLLECTION, upload_id
from imagesearch.s3.backfill import BackfillStats, list_folder, list_s3_objects, parse_source, run_backfill
from imagesearch.s3.event_log import EventLog
from imagesearch.stores.base import Store

if TYPE_CHECKING:
    from botocore.client import BaseClient

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    backfill: BackfillStats | None = None
    orphans: list[str] = field(default_factory=list)
    removed: int = 0


def _s3_key(source: str, bucket: str) -> str | None:
    """The object key of a record's ``source`` (``s3://bucket/key``, the key as is), None for another bucket."""
    head = f"s3://{bucket}/"
    return source[len(head):] if source.startswith(head) else None


def find_orphans(source: str, *, store: Store, collection: str | None = None,
                 s3_client: BaseClient | None = None) -> list[str]:
    """Ids of the records whose source object (or file) is gone."""
    kind, where, prefix = parse_source(source)
    if kind == "s3":
        present = {event.key for event in list_s3_objects(where, prefix, client=s3_client)}
        orphans = []
        for record in store.iter_records():
            key = _s3_key(record.source, where)
            if key is not None and key.startswith(prefix) and key not in present:
                orphans.append(record.id)
        return orphans
    collection = collection or DEFAULT_COLLECTION
    present = set(list_folder(Path(where)))
    return [r.id for r in store.iter_records()
            if r.collection == collection and r.external_id and r.external_id not in present
            and r.id == upload_id(r.tenant, collection, r.external_id)]


def reconcile(source: str, *, settings: Settings, store: Store, blobs: BlobStore, enqueue: Callable[[str], None],
              event_log: EventLog, collection: str | None = None, dry_run: bool = False,
              s3_client: BaseClient | None = None,
              on_item: Callable[[BackfillStats], None] | None = None) -> ReconcileReport:
    """Remove the orphans, then backfill with ``requeue`` on (``dry_run``: only find the orphans)."""
    report = ReconcileReport()
    report.orphans = find_orphans(source, store=store, collection=collection, s3_client=s3_client)
    if dry_run:
        return report
    for image_id in report.orphans:
        if ingest.remove(image_id, store=store, blobs=blobs):
            report.removed += 1
    report.backfill = run_backfill(source, settings=settings, store=store, blobs=blobs, enqueue=enqueue,
                                   event_log=event_log, collection=collection, restart=True, requeue=True,
                                   on_item=on_item, s3_client=s3_client)
    log.info("reconciled %s: %d orphans removed, backfill %s", source, report.removed, report.backfill)
    return report
