"""Applying S3 object events to the index: one record per object key, kept in step with the bucket.

* **Id.** ``source_id(bucket, key)``: the version is *not* part of the id. The index mirrors what a
  reader of the bucket sees, one image per key; a new version of a key replaces the record (its
  ``blob_key`` then names that version, ``s3://bucket/key?versionId=...``, and its ``content_hash``
  is ``etag:version``). Every delivery of an event for a key lands on the same record.
* **Order.** An event older than the last one applied to its object, as the
  :mod:`~imagesearch.s3.event_log` records it, is dropped ("stale"), so an older put never
  resurrects a deleted object.
* **Duplicates.** A created event whose etag matches the record's is "unchanged": an indexed or
  failed record is left alone; a queued one is sent to the embed queue again (sending may have
  failed the first time; the embed task ignores ids it already indexed).
* **Refusals.** Objects over ``max_upload_bytes``, keys with a non-image extension and non-image
  content types are recorded as ``failed`` with the reason, visible via ``GET /v1/images/<id>``.
* **Metadata.** With a ``head`` reader (the composition root passes :func:`head_s3_object`), a new
  object's HEAD gives its user metadata (``x-amz-meta-*``), read through
  :func:`imagesearch.metadata.from_s3_metadata` with ``IMAGESEARCH_S3_METADATA_MAP`` into the
  record's title, description, tags and attributes; it also gives the content type and size S3
  notifications leave out, so those refusals apply to S3 events too. An object whose metadata does
  not parse (an undeclared attribute is ignored, a declared one of the wrong type is not) is
  recorded ``failed`` with the reason and looked at again on its next event or listing. An object
  gone by the time of the HEAD is ``absent`` (its removal event follows). A live event for content
  already recorded (S3 sends ``ObjectCreated:Copy`` when only the metadata was replaced, and the
  etag stays) HEADs too and applies the fields the metadata names; a listing does not, which
  keeps a backfill of an indexed bucket at one LIST per thousand objects.
* **Deletes.** ObjectRemoved (and delete markers, and lifecycle expirations) remove the record with
  :func:`imagesearch.ingest.remove`, which never deletes the source object. Deleting a noncurrent
  version (a versioned delete whose version is not the indexed one) leaves the record alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from imagesearch import ingest
from imagesearch.blobs import BlobStore
from imagesearch.config import Settings
from imagesearch.errors import InvalidInput, PermanentError
from imagesearch.metadata import Metadata, from_s3_metadata
from imagesearch.records import DEFAULT_TENANT, ImageRecord, source_id
from imagesearch.s3.event_log import EventLog, LogEntry
from imagesearch.s3.events import ObjectEvent, compare_sequencers
from imagesearch.s3.sources import ObjectHead, is_image_content_type, parse_s3_uri, s3_uri
from imagesearch.stores.base import Store
from imagesearch.vocab import Status

log = logging.getLogger(__name__)

Action = Literal["queued", "requeued", "unchanged", "failed", "removed", "absent", "stale", "ignored"]
# (bucket, key, version) -> the object's HEAD, None when it is gone.
HeadReader = Callable[[str, str, str | None], ObjectHead | None]


@dataclass(frozen=True)
class ApplyResult:
    id: str
    action: Action
    reason: str = ""
    bucket: str = ""
    key: str = ""

    def as_dict(self) -> dict:
        return {"id": self.id, "action": self.action, "reason": self.reason, "bucket": self.bucket, "key": self.key}


def object_id(bucket: str, key: str) -> str:
    return source_id(bucket, key)  # the version is deliberately left out: one record per key


def record_version(record: ImageRecord) -> str | None:
    if not record.blob_key.startswith("s3://"):
        return None
    return parse_s3_uri(record.blob_key)[2]


def content_hash_of(event: ObjectEvent) -> str:
    if event.etag:
        base = event.etag
    elif event.sequencer:
        base = f"seq-{event.sequencer}"
    else:  # nothing identifies the content: treat every event as new content
        base = f"t-{event.event_time or time.time()!r}"
    return f"{base}:{event.version}" if event.version else base


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class S3Ingestor:
    """Applies :class:`ObjectEvent` s: records written and embed tasks sent through ``enqueue``."""

    def __init__(self, *, settings: Settings, store: Store, blobs: BlobStore, enqueue: Callable[[str], None],
                 event_log: EventLog, head: HeadReader | None = None) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.enqueue = enqueue
        self.event_log = event_log
        self.head = head  # None: no metadata read (and no request to S3 while applying events)
        self.schema = settings.ingest.attribute_schema()
        self.renames = {k.lower(): v for k, v in settings.s3.metadata_map.items()}
        self.extensions = frozenset(e.lower() if e.startswith(".") else f".{e.lower()}"
                                    for e in _comma_list(settings.s3.image_extensions))
        self.buckets = frozenset(_comma_list(settings.s3.bucket_allowlist))

    def apply_all(self, events: Iterable[ObjectEvent], *, requeue_queued: bool = True) -> list[ApplyResult]:
        return [self.apply(event, requeue_queued=requeue_queued) for event in events]

    def apply(self, event: ObjectEvent, *, requeue_queued: bool = True) -> ApplyResult:
        image_id = object_id(event.bucket, event.key)

        def result(action: Action, reason: str = "") -> ApplyResult:
            return ApplyResult(image_id, action, reason, event.bucket, event.key)

        if self.buckets and event.bucket not in self.buckets:
            return result("ignored", f"bucket {event.bucket!r} is not in IMAGESEARCH_S3_BUCKET_ALLOWLIST")
        if event.kind == "created" and event.key.endswith("/") and not event.size:
            return result("ignored", "a folder marker, not an object")
        with self.event_log.lock(image_id):
            previous = self.event_log.last(image_id)
            stale = self._stale(event, previous)
            if stale:
                return result("stale", stale)
            if event.kind == "removed":
                action, reason = self._remove(image_id, event)
            else:
                action, reason = self._create(image_id, event, requeue_queued)
            if action != "ignored" and (event.sequencer or event.event_time is not None):
                self.event_log.record(image_id, event.sequencer, event.kind, event.event_time)
        log.info("s3 event %s s3://%s/%s -> %s %s %s", event.kind, event.bucket, event.key, image_id, action, reason)
        return result(action, reason)

    @staticmethod
    def _stale(event: ObjectEvent, previous: LogEntry | None) -> str:
        if previous is None:
            return ""
        if event.sequencer and previous.sequencer:
            if compare_sequencers(event.sequencer, previous.sequencer) < 0:
                return f"sequencer {event.sequencer} is older than {previous.sequencer} ({previous.kind})"
            return ""
        if event.event_time is None or previous.time is None:
            return ""
        # Without sequencers, event times decide. A listing's LastModified is truncated to the second,
        # so for a listed object an applied "created" event must be more than a second newer to win.
        if previous.kind == "removed" and previous.time > event.event_time:
            return "the object was deleted after this version was written"
        slack = 1.0 if event.from_listing else 0.0
        if previous.kind == "created" and previous.time > event.event_time + slack:
            return "a newer version of the object was already applied"
        return ""

    def _remove(self, image_id: str, event: ObjectEvent) -> tuple[Action, str]:
        record = self.store.get(image_id)
        if record is None:
            return "absent", "no record for this object"
        indexed_version = record_version(record)
        if event.version and not event.delete_marker and indexed_version and indexed_version != event.version:
            return "ignored", f"version {event.version} is not the indexed version {indexed_version}"
        ingest.remove(image_id, store=self.store, blobs=self.blobs)
        return "removed", ""

    def _create(self, image_id: str, event: ObjectEvent, requeue_queued: bool) -> tuple[Action, str]:
        digest = content_hash_of(event)
        existing = self.store.get(image_id)
        same = existing is not None and (existing.content_hash == digest or (
            event.version is None and event.etag and existing.content_hash.startswith(f"{event.etag}:")))
        # Content refused for its metadata is looked at again: the metadata may have been fixed since.
        if same and not (self.head is not None and ingest.refused_for_metadata(existing)):
            assert existing is not None
            updated = self._refresh_metadata(existing, event) if self.head and not event.from_listing else ""
            if existing.status == Status.QUEUED and requeue_queued:
                self.enqueue(image_id)
                return "requeued", "same content, still queued" + updated
            return "unchanged", f"same content, already {existing.status}" + updated
        refusal = self._refusal(event.size, event.key, event.content_type)
        meta = Metadata()
        if not refusal and self.head is not None:
            try:
                head = self.head(event.bucket, event.key, event.version)
            except PermanentError as exc:  # S3 refused the HEAD for good: record it rather than retry forever
                head, refusal = ObjectHead(), f"reading the object's metadata failed: {exc}"
            if head is None:
                return "absent", "the object is gone (deleted after this event)"
            refusal = refusal or self._refusal(head.size, "", head.content_type)
            if not refusal:
                try:
                    meta = from_s3_metadata(head.metadata, self.schema, self.renames)
                except InvalidInput as exc:
                    refusal = f"{ingest.METADATA_REFUSAL}{exc}"
        record = ImageRecord(
            id=image_id,
            blob_key=s3_uri(event.bucket, event.key, event.version),
            content_hash=digest,
            source=f"s3://{event.bucket}/{event.key}",
            collection=self._collection(event),
            tenant=DEFAULT_TENANT,
            external_id=None,
            tags=list(meta.tags),
            title=meta.title,
            description=meta.description,
            attributes=dict(meta.attributes),
        )
        self.store.put(record)
        if refusal:
            self.store.set_failed(image_id, digest, "embed", f"not indexed: {refusal}")
            return "failed", refusal
        self.enqueue(image_id)
        return "queued", ""

    def _refresh_metadata(self, existing: ImageRecord, event: ObjectEvent) -> str:
        """Apply the object's metadata to a record of the same content; says what it did, for the reason."""
        assert self.head is not None
        try:
            head = self.head(event.bucket, event.key, event.version)
        except PermanentError as exc:  # the record stands as it is; retrying the event would not help
            return f"; metadata not read: {exc}"
        if head is None or (head.etag and event.etag and head.etag != event.etag):
            return ""  # gone or replaced since: the event for that change brings its own metadata
        try:
            meta = from_s3_metadata(head.metadata, self.schema, self.renames)
        except InvalidInput as exc:
            log.warning("s3://%s/%s: metadata not applied: %s", event.bucket, event.key, exc)
            return f"; metadata not applied: {exc}"
        given = {self.renames.get(k, k) for k in head.metadata}
        changes = ingest.metadata_patch(existing, meta, given)
        if changes is None:
            return ""
        self.store.patch(existing.id, changes)
        return "; metadata updated"

    def _refusal(self, size: int | None, key: str, content_type: str | None) -> str:
        if size is not None and size > self.settings.ingest.max_upload_bytes:
            return f"the object is {size} bytes, the limit is {self.settings.ingest.max_upload_bytes}"
        suffix = PurePosixPath(key).suffix.lower()
        if suffix and self.extensions and suffix not in self.extensions:
            return f"the key's extension {suffix!r} is not an image type"
        if content_type and not is_image_content_type(content_type):
            return f"content type {content_type!r} is not an image"
        return ""

    def _collection(self, event: ObjectEvent) -> str:
        mapping = self.settings.s3.collection_map
        if event.configuration_id and event.configuration_id in mapping:
            return mapping[event.configuration_id]
        return mapping.get(event.bucket, self.settings.s3.collection)
