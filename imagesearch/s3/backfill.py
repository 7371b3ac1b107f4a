"""Bulk backfill: enqueue every image of an S3 prefix or a local folder that is not indexed yet.

* ``s3://bucket/prefix``: objects are listed (ListObjectsV2, key order) and each one goes through
  the same :class:`imagesearch.s3.ingest.S3Ingestor` as live events, as a "created" event with the
  listed etag, size and LastModified. So the record is the one an event would have written (same
  id, same ``s3://`` blob key), an object already indexed with the same etag is skipped, and a
  listing older than an event already applied (say, the object was deleted meanwhile) is dropped.
* A local folder: files are **copied** into blob storage through :func:`imagesearch.ingest.accept`
  with ``external_id`` = the path relative to the folder, so the index never depends on the folder
  staying where it is, the worker reads them like uploads, and running the backfill again for the
  same folder (and collection) converges on the same records. A file whose content hash matches its
  record is skipped.
* Metadata: an S3 object's user metadata comes with its HEAD (see :mod:`imagesearch.s3.ingest`). A
  local image may have a sidecar, ``<file name>.json`` next to it (``shoe.jpg.json``), holding
  ``{"title", "description", "tags", "attributes"}`` (any of them; attributes as
  ``IMAGESEARCH_ATTRIBUTES`` declares them). Sidecars are not items themselves. A sidecar that does
  not parse records the image ``failed`` with the reason (the file is looked at again on the next
  run); a changed sidecar of an unchanged image updates the fields it names (``updated``).

Resuming: the last key (or relative path) fully handled is written to a checkpoint file under
``DATA_DIR/backfill/`` every few items and when the run is interrupted (Ctrl-C). The next run for
the same source (and collection) continues after it; a run that completes removes its checkpoint.
Every step is idempotent, so items handled after the last checkpoint write (a run killed without a
chance to save) are just seen again. Records found still ``queued`` with the same content are
skipped by a fresh run (their task is on its way) but sent again by a resumed run or with
``--requeue``, because the interrupted run may have written the record and stopped before sending
its task.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from imagesearch import ingest
from imagesearch.attributes import AttributeSchema
from imagesearch.blobs import BlobStore
from imagesearch.config import Settings
from imagesearch.errors import InvalidInput
from imagesearch.imaging import InvalidImage
from imagesearch.metadata import Metadata, from_fields
from imagesearch.records import DEFAULT_COLLECTION, DEFAULT_TENANT, content_hash, upload_id
from imagesearch.s3.client import call_errors, classify
from imagesearch.s3.client import s3_client as shared_s3_client
from imagesearch.s3.event_log import EventLog
from imagesearch.s3.events import ObjectEvent
from imagesearch.s3.ingest import S3Ingestor
from imagesearch.s3.sources import head_s3_object
from imagesearch.stores.base import Store
from imagesearch.vocab import Status

if TYPE_CHECKING:
    from botocore.client import BaseClient

log = logging.getLogger(__name__)

DONE_STATUSES = frozenset({Status.INDEXED, Status.FAILED})
SIDECAR_SUFFIX = ".json"


@dataclass
class BackfillStats:
    source: str
    listed: int = 0
    queued: int = 0  # sent to the embed queue by this run
    unchanged: int = 0  # already indexed (or failed, or queued) with the same content
    failed: int = 0  # recorded as failed without being fetched (too large, not an image type, bad metadata)
    updated: int = 0  # same content, metadata (a sidecar) changed: applied without re-embedding
    skipped: int = 0  # not indexed at all (stale listing, not an image file, unreadable)
    resumed_after: str | None = None
    last: str | None = None
    complete: bool = False
    queued_ids: list[str] = field(default_factory=list)


class Checkpoint:
    """The last key handled for one source, in ``DATA_DIR/backfill/<hash of the source>.json``."""

    def __init__(self, data_dir: Path, source: str) -> None:
        digest = hashlib.sha256(source.encode()).hexdigest()[:24]
        self.path = Path(data_dir) / "backfill" / f"{digest}.json"
        self.source = source

    def load(self) -> str | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data.get("last") if data.get("source") == self.source else None

    def save(self, last: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"source": self.source, "last": last}))
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def parse_source(source: str) -> tuple[str, str, str]:
    """("s3", bucket, prefix) or ("folder", path, "")."""
    if source.startswith("s3://"):
        rest = source[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise InvalidInput(f"no bucket in {source!r}")
        return "s3", bucket, prefix
    path = Path(source).expanduser()
    if not path.is_dir():
        raise InvalidInput(f"{source!r} is neither s3://bucket/prefix nor a folder")
    return "folder", str(path.resolve()), ""


def run_backfill(source: str, *, settings: Settings, store: Store, blobs: BlobStore, enqueue: Callable[[str], None],
                 event_log: EventLog, collection: str | None = None, restart: bool = False, requeue: bool = False,
                 on_item: Callable[[BackfillStats], None] | None = None, save_every: int = 100,
                 s3_client: BaseClient | None = None) -> BackfillStats:
    """Enqueue what is missing; resumable (see the module docstring). Ctrl-C saves the checkpoint."""
    kind, where, prefix = parse_source(source)
    canonical = f"s3://{where}/{prefix}" if kind == "s3" else where
    checkpoint = Checkpoint(settings.data_dir, f"{canonical}\x1f{collection or ''}")
    if restart:
        checkpoint.clear()
    stats = BackfillStats(source=canonical, resumed_after=checkpoint.load())
    # The interrupted run may have written an item's record and been stopped before sending its task:
    # a resumed run sends records it finds still queued again (a duplicate task is a no-op).
    requeue = requeue or stats.resumed_after is not None
    items = (_s3_items(where, prefix, stats.resumed_after, settings, store, blobs, enqueue, event_log, collection,
                       requeue, s3_client) if kind == "s3"
             else _folder_items(Path(where), stats.resumed_after, settings, store, blobs, enqueue, collection, requeue))
    since_save = 0
    try:
        for name, outcome, image_id in items:
            stats.listed += 1
            setattr(stats, outcome, getattr(stats, outcome) + 1)
            if outcome == "queued" and image_id:
                stats.queued_ids.append(image_id)
            stats.last = name
            since_save += 1
            if since_save >= save_every:
                checkpoint.save(name)
                since_save = 0
            if on_item:
                on_item(stats)
        stats.complete = True
        checkpoint.clear()
    finally:
        if not stats.complete and stats.last is not None:
            checkpoint.save(stats.last)  # interrupted: the next run continues after the last item handled
    return stats


def _s3_items(bucket: str, prefix: str, start_after: str | None, settings: Settings, store: Store, blobs: BlobStore,
              enqueue: Callable[[str], None], event_log: EventLog, collection: str | None, requeue: bool,
              client: BaseClient | None) -> Iterator[tuple[str, str, str | None]]:
    if collection:
        settings = settings.model_copy(update={"s3": settings.s3.model_copy(update={"collection": collection,
                                                                           "collection_map": {}})})
    ingestor = S3Ingestor(settings=settings, store=store, blobs=blobs, enqueue=enqueue, event_log=event_log,
                          head=lambda b, k, v: head_s3_object(b, k, v, client=client))
    for event in list_s3_objects(bucket, prefix, start_after, client):
        result = ingestor.apply(event, requeue_queued=requeue)
        outcome = {"queued": "queued", "requeued": "queued", "unchanged": "unchanged",
                   "failed": "failed"}.get(result.action, "skipped")
        yield event.key, outcome, result.id


def list_s3_objects(bucket: str, prefix: str = "", start_after: str | None = None,
                    client: BaseClient | None = None) -> Iterator[ObjectEvent]:
    """Every object under the prefix, in key order, as a "created" event (etag, size, LastModified)."""
    client = client or shared_s3_client()
    request = {"Bucket": bucket, "Prefix": prefix, "PaginationConfig": {"PageSize": 1000}}
    if start_after:
        request["StartAfter"] = start_after
    pages = iter(client.get_paginator("list_objects_v2").paginate(**request))
    while True:
        # Only the listing call is classified, not the consumer's work between pages.
        try:
            page = next(pages, None)
        except call_errors() as exc:
            raise classify(exc, f"listing s3://{bucket}/{prefix}") from exc
        if page is None:
            return
        for obj in page.get("Contents", []):
            modified = obj.get("LastModified")
            yield ObjectEvent(bucket=bucket, key=obj["Key"], kind="created", size=obj.get("Size"),
                              etag=(obj.get("ETag") or "").strip('"') or None, event_name="Backfill",
                              event_time=modified.timestamp() if modified is not None else None, from_listing=True)


def list_folder(root: Path, start_after: str | None = None) -> list[str]:
    """Relative paths (POSIX, sorted) of the regular files under ``root``, hidden ones left out."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            relative = Path(folder, name).relative_to(root).as_posix()
            if start_after is None or relative > start_after:
                found.append(relative)
    return sorted(found)


def is_sidecar(root: Path, relative: str) -> bool:
    """``shoe.jpg.json`` next to ``shoe.jpg`` is that image's metadata, not an image to index."""
    return relative.endswith(SIDECAR_SUFFIX) and (root / relative[:-len(SIDECAR_SUFFIX)]).is_file()


def read_sidecar(path: Path, schema: AttributeSchema) -> tuple[Metadata, set[str]] | None:
    """The metadata in ``<image>.json`` and the fields it names; None without a sidecar. Raises
    InvalidInput (naming the file) when it cannot be read or does not parse."""
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    try:
        text = sidecar.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{sidecar.name}: {exc}") from None
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{sidecar.name} is not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise InvalidInput(f"{sidecar.name} must hold a JSON object")
    unknown = set(fields) - {"title", "description", "tags", "attributes"}
    if unknown:
        raise InvalidInput(f"{sidecar.name}: unknown fields {sorted(unknown)}; use title, description, tags, "
                           "attributes")
    try:
        return from_fields(fields, schema), set(fields)
    except InvalidInput as exc:
        raise InvalidInput(f"{sidecar.name}: {exc}") from None


def _folder_items(root: Path, start_after: str | None, settings: Settings, store: Store, blobs: BlobStore,
                  enqueue: Callable[[str], None], collection: str | None,
                  requeue: bool) -> Iterator[tuple[str, str, str | None]]:
    collection = collection or DEFAULT_COLLECTION
    schema = settings.ingest.attribute_schema()
    for relative in list_folder(root, start_after):
        if is_sidecar(root, relative):
            continue
        path = root / relative
        image_id = upload_id(DEFAULT_TENANT, collection, relative)
        try:
            if path.stat().st_size > settings.ingest.max_upload_bytes:
                log.warning("skipping %s: larger than %d bytes", relative, settings.ingest.max_upload_bytes)
                yield relative, "skipped", None
                continue
            data = path.read_bytes()
        except OSError as exc:
            log.warning("skipping %s: %s", relative, exc)
            yield relative, "skipped", None
            continue
        refusal = ""
        try:
            found = read_sidecar(path, schema)
        except InvalidInput as exc:
            found, refusal = None, f"{ingest.METADATA_REFUSAL}{exc}"
        meta, given = found or (Metadata(), set())
        existing = store.get(image_id)
        if (existing is not None and existing.content_hash == content_hash(data)
                and not ingest.refused_for_metadata(existing)):
            changes = ingest.metadata_patch(existing, meta, given) if found else None
            if changes is not None:
                store.patch(image_id, changes)
            if existing.status == "queued" and requeue:
                enqueue(image_id)
                yield relative, "queued", image_id
            else:
                yield relative, "unchanged" if changes is None else "updated", image_id
            if refusal:
                log.warning("%s: sidecar not applied: %s", relative, refusal)
            continue
        upload = ingest.Upload(data=data, filename=path.name, collection=collection, external_id=relative,
                               tags=meta.tags, title=meta.title, description=meta.description,
                               attributes=meta.attributes)
        try:
            record = ingest.accept(upload, settings=settings, store=store, blobs=blobs,
                                   enqueue=(lambda _id: None) if refusal else enqueue)
        except (InvalidImage, ingest.UploadTooLarge) as exc:
            log.info("skipping %s: %s", relative, exc)
            yield relative, "skipped", None
            continue
        if refusal:
            # Recorded, so the reason shows in the API and `imagesearch status`; not sent to the workers.
            store.set_failed(image_id, record.content_hash, "embed", f"not indexed: {refusal}")
            log.warning("%s not indexed: %s", relative, refusal)
            yield relative, "failed", image_id
            continue
        yield relative, "queued", image_id


def count_done(store: Store, ids: Iterable[str]) -> tuple[set[str], dict[str, int]]:
    """Of ``ids``: those finished (indexed, failed, or gone), and a count per status."""
    ids = list(ids)
    records = store.get_many(ids)
    done: set[str] = set()
    counts = {"indexed": 0, "failed": 0, "removed": 0}
    for image_id in ids:
        record = records.get(image_id)
        if record is None:
            done.add(image_id)
            counts["removed"] += 1
        elif record.status in DONE_STATUSES:
            done.add(image_id)
            counts[record.status] += 1
    return done, counts
