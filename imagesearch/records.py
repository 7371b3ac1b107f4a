"""The image record: what the store keeps about each image, and how its id is derived."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, field

from imagesearch.vocab import CaptionStatus, Status, VectorField

__all__ = ["CaptionStatus", "ImageRecord", "Status", "VectorField", "content_hash", "source_id", "upload_id"]

DEFAULT_COLLECTION = "default"
DEFAULT_TENANT = "default"


@dataclass
class ImageRecord:
    id: str
    blob_key: str
    content_hash: str
    source: str = ""
    collection: str = DEFAULT_COLLECTION
    tenant: str = DEFAULT_TENANT
    external_id: str | None = None
    tags: list[str] = field(default_factory=list)
    title: str | None = None
    description: str | None = None
    attributes: dict[str, str | float | bool] = field(default_factory=dict)
    status: Status = Status.QUEUED
    error: str | None = None
    caption: str | None = None
    caption_status: CaptionStatus = CaptionStatus.PENDING
    thumb_key: str | None = None
    width: int | None = None
    height: int | None = None
    image_model: str | None = None
    caption_model: str | None = None
    text_model: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    taken_at: float | None = None  # EXIF DateTimeOriginal (epoch seconds), read by the embed stage


def upload_id(tenant: str, collection: str, external_id: str | None) -> str:
    """Stable for a caller-supplied external id (a re-sync replaces the record), random otherwise."""
    if external_id:
        return _digest("upload", tenant, collection, external_id)
    return uuid.uuid4().hex


def source_id(bucket: str, key: str, version: str | None = None) -> str:
    """Stable id for an object in a bucket, so redelivered events converge on one record."""
    return _digest("s3", bucket, key, version or "")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
