"""Accepting an image: validate, store the original, record it as queued.

Enqueueing is the caller's job (the API or the CLI passes its own function), so this module
stays free of any queueing library.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from imagesearch import imaging
from imagesearch.blobs import BlobStore, original_key, thumbnail_key
from imagesearch.config import Settings
from imagesearch.errors import TooLarge, TransientError
from imagesearch.metadata import Metadata
from imagesearch.records import DEFAULT_COLLECTION, DEFAULT_TENANT, ImageRecord, content_hash, upload_id
from imagesearch.stores.base import RecordPatch, Store
from imagesearch.taskqueue import QueueUnavailable
from imagesearch.vocab import Status


class UploadTooLarge(TooLarge):
    """An upload over ``MAX_UPLOAD_BYTES``."""


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str = ""
    collection: str = DEFAULT_COLLECTION
    tenant: str = DEFAULT_TENANT
    external_id: str | None = None
    tags: tuple[str, ...] = ()
    title: str | None = None
    description: str | None = None
    attributes: Mapping[str, str | float | bool] = field(default_factory=dict)


def accept(upload: Upload, *, settings: Settings, store: Store, blobs: BlobStore,
           enqueue: Callable[[str], None]) -> ImageRecord:
    """Store and queue one upload. Raises InvalidImage or UploadTooLarge for bad input.

    The record is written before the task is sent: if sending fails the record stays
    ``queued`` and a re-send (or the reconciler) picks it up; nothing accepted is lost.
    """
    if len(upload.data) > settings.ingest.max_upload_bytes:
        raise UploadTooLarge(f"upload is {len(upload.data)} bytes, the limit is {settings.ingest.max_upload_bytes}")
    image_format, _, _ = imaging.probe(upload.data, settings.ingest.max_image_pixels)
    image_id = upload_id(upload.tenant, upload.collection, upload.external_id)
    record = ImageRecord(
        id=image_id,
        blob_key=original_key(image_id),
        content_hash=content_hash(upload.data),
        source=f"upload:{upload.filename}" if upload.filename else "upload",
        collection=upload.collection,
        tenant=upload.tenant,
        external_id=upload.external_id,
        tags=list(upload.tags),
        title=upload.title,
        description=upload.description,
        attributes=dict(upload.attributes),
    )
    blobs.put(record.blob_key, upload.data, f"image/{image_format.lower()}")
    store.put(record)
    enqueue(image_id)
    return record


@dataclass(frozen=True)
class Accepted:
    """One upload of a batch, stored and recorded as ``queued``; ``unsent`` is why its task was not sent
    (the broker was down): the record stays queued and the embed workers' sweeper sends it later."""

    record: ImageRecord
    unsent: QueueUnavailable | None = None


class BatchIntake:
    """Accepts the uploads of one batch one at a time, each independently of the others.

    A bad upload raises its own error and the next one is accepted as usual. Two failures say
    something about the rest of the batch, so they change how it is handled:

    - the broker refusing a task: later uploads are still stored and recorded ``queued`` but no send
      is tried (each would wait for the broker again); nothing accepted is lost, since records left
      ``queued`` are re-sent by the sweeper;
    - the store or blob storage unavailable: later uploads are not tried and raise the same error,
      rather than each waiting out the store's retries.
    """

    def __init__(self, *, settings: Settings, store: Store, blobs: BlobStore, enqueue: Callable[[str], None]) -> None:
        self.settings, self.store, self.blobs, self.enqueue = settings, store, blobs, enqueue
        self.broker_down: QueueUnavailable | None = None
        self.unavailable: TransientError | None = None

    def accept(self, upload: Upload) -> Accepted:
        if self.unavailable is not None:
            raise type(self.unavailable)(f"not tried: {self.unavailable}")
        unsent: list[QueueUnavailable] = []

        def send(image_id: str) -> None:
            if self.broker_down is not None:
                unsent.append(self.broker_down)
                return
            try:
                self.enqueue(image_id)
            except QueueUnavailable as exc:
                self.broker_down = exc
                unsent.append(exc)

        try:
            record = accept(upload, settings=self.settings, store=self.store, blobs=self.blobs, enqueue=send)
        except TransientError as exc:
            self.unavailable = exc
            raise
        return Accepted(record, unsent[0] if unsent else None)


# Starts the error of a record refused for its metadata (S3 object metadata, a backfill sidecar), so a
# later look at the same content tries the metadata again instead of calling it unchanged.
METADATA_REFUSAL = "bad metadata: "


def refused_for_metadata(record: ImageRecord) -> bool:
    return record.status == Status.FAILED and METADATA_REFUSAL in (record.error or "")


def metadata_patch(record: ImageRecord, meta: Metadata, given: Collection[str]) -> RecordPatch | None:
    """The change that brings ``record`` to the metadata a source gives again for the same content
    (S3 object metadata, a backfill sidecar); None when nothing differs.

    Only the fields the source names (``given``: title, description, tags) are compared, and
    attributes one by one, so what the source does not say, say a title set through the API, stays.
    """
    changes: dict[str, object] = {}
    clear = set()
    for name in ("title", "description"):
        value = getattr(meta, name)
        if name in given and value != getattr(record, name):
            changes[name] = value
            if value is None:
                clear.add(name)
    if "tags" in given and list(meta.tags) != record.tags:
        changes["tags"] = list(meta.tags)
    merged = {**record.attributes, **meta.attributes}
    if merged != record.attributes:
        changes["attributes"] = merged
    if not changes:
        return None
    return RecordPatch(**changes, clear=frozenset(clear))  # type: ignore[arg-type]


def remove(image_id: str, *, store: Store, blobs: BlobStore) -> bool:
    """Delete the record, its original and its thumbnail. False when the id is unknown."""
    record = store.delete(image_id)
    if record is None:
        return False
    if record.blob_key.startswith("originals/"):  # never delete a source object we do not own
        blobs.delete(record.blob_key)
    blobs.delete(thumbnail_key(image_id))
    return True
