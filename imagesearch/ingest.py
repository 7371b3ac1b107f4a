"""Accepting an image: validate, store the original, record it as queued.

Enqueueing is the caller's job (the API or the CLI passes its own function), so this module
stays free of any queueing library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from imagesearch import imaging
from imagesearch.blobs import BlobStore, original_key, thumbnail_key
from imagesearch.config import Settings
from imagesearch.errors import TooLarge
from imagesearch.records import DEFAULT_COLLECTION, DEFAULT_TENANT, ImageRecord, content_hash, upload_id
from imagesearch.stores.base import Store


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


def remove(image_id: str, *, store: Store, blobs: BlobStore) -> bool:
    """Delete the record, its original and its thumbnail. False when the id is unknown."""
    record = store.delete(image_id)
    if record is None:
        return False
    if record.blob_key.startswith("originals/"):  # never delete a source object we do not own
        blobs.delete(record.blob_key)
    blobs.delete(thumbnail_key(image_id))
    return True
