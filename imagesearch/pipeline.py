"""The two worker stages, as plain functions of ids: embed (image -> vector) and caption.

Each stage takes a batch of image ids and reports, per id, whether it is done, failed for good
(a broken image: never retried), to be retried (store or blob storage unreachable), or skipped
(deleted meanwhile, or already done by an earlier delivery). The Celery adapter turns that
report into acknowledgements, retries and follow-up tasks.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from imagesearch import imaging
from imagesearch.blobs import BlobMissing, BlobStore, BlobUnavailable, thumbnail_key
from imagesearch.config import Settings
from imagesearch.models import Captioner, ClipEncoder
from imagesearch.records import ImageRecord
from imagesearch.sources import read_original
from imagesearch.stores.base import CaptionUpdate, ImageVectorUpdate, Store, StoreUnavailable

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (BlobUnavailable, StoreUnavailable, ConnectionError, TimeoutError)


@dataclass
class BatchOutcome:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retry: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    # Ids the next stage should process (the caption stage after embedding).
    follow_up: list[str] = field(default_factory=list)


def _fetch_and_decode(blobs: BlobStore, key: str, settings: Settings, min_side: int) -> Image.Image:
    data = read_original(key, blobs, settings.max_upload_bytes)
    return imaging.decode(data, min_side=min_side, max_pixels=settings.max_image_pixels)


def _load_images(records: list[ImageRecord], key_of, blobs: BlobStore, settings: Settings, min_side: int,
                 outcome: BatchOutcome) -> list[tuple[ImageRecord, Image.Image]]:
    """Fetch and decode in threads (Pillow and boto3 release the GIL); sort errors by kind."""
    loaded: list[tuple[ImageRecord, Image.Image]] = []
    if not records:
        return loaded
    with ThreadPoolExecutor(max_workers=min(4, len(records))) as pool:
        futures = [pool.submit(_fetch_and_decode, blobs, key_of(r), settings, min_side) for r in records]
        for record, future in zip(records, futures):
            try:
                loaded.append((record, future.result()))
            except imaging.InvalidImage as exc:
                outcome.failed[record.id] = str(exc)
            except BlobMissing:
                outcome.failed[record.id] = "stored image is missing"
            except ValueError as exc:  # larger than allowed
                outcome.failed[record.id] = str(exc)
            except TRANSIENT_ERRORS as exc:
                outcome.retry[record.id] = f"{type(exc).__name__}: {exc}"
    return loaded


def embed_batch(ids: list[str], *, settings: Settings, store: Store, blobs: BlobStore,
                clip: ClipEncoder) -> BatchOutcome:
    outcome = BatchOutcome()
    try:
        records = store.get_many(ids)
        todo: list[ImageRecord] = []
        for image_id in dict.fromkeys(ids):
            record = records.get(image_id)
            if record is None:
                outcome.skipped.append(image_id)  # deleted since it was queued
            elif record.status == "indexed" and record.image_model == clip.identity:
                outcome.skipped.append(image_id)  # a redelivery: already done
                if record.caption_status == "pending":
                    outcome.follow_up.append(image_id)
            else:
                todo.append(record)
        loaded = _load_images(todo, lambda r: r.blob_key, blobs, settings, settings.decode_min_side, outcome)
        if loaded:
            vectors = clip.encode_images([image for _, image in loaded])
            updates = []
            for (record, image), vector in zip(loaded, vectors):
                thumb = thumbnail_key(record.id)
                blobs.put(thumb, imaging.thumbnail_jpeg(image, settings.thumbnail_size), "image/jpeg")
                updates.append(ImageVectorUpdate(record.id, record.content_hash, vector, clip.identity, thumb,
                                                 image.width, image.height))
            written = set(store.set_image_vectors(updates))
            for update in updates:
                (outcome.done if update.id in written else outcome.skipped).append(update.id)
            outcome.follow_up.extend(u.id for u in updates if u.id in written)
        for image_id, error in outcome.failed.items():
            store.set_failed(image_id, records[image_id].content_hash, "embed", error)
    except TRANSIENT_ERRORS as exc:
        return _all_retry(ids, outcome, exc)
    return outcome


def caption_batch(ids: list[str], *, settings: Settings, store: Store, blobs: BlobStore,
                  captioner: Captioner, clip: ClipEncoder) -> BatchOutcome:
    outcome = BatchOutcome()
    try:
        records = store.get_many(ids)
        todo: list[ImageRecord] = []
        for image_id in dict.fromkeys(ids):
            record = records.get(image_id)
            if record is None or record.status != "indexed" or not record.thumb_key:
                outcome.skipped.append(image_id)
            elif record.caption_status == "done" and record.caption_model == captioner.identity \
                    and record.text_model == clip.identity:
                outcome.skipped.append(image_id)
            else:
                todo.append(record)
        loaded = _load_images(todo, lambda r: r.thumb_key, blobs, settings, 1, outcome)
        if loaded:
            captions = captioner.caption([image for _, image in loaded])
            vectors = clip.encode_texts(captions)
            updates = [
                CaptionUpdate(record.id, record.content_hash, caption, vector, captioner.identity, clip.identity)
                for (record, _), caption, vector in zip(loaded, captions, vectors)
            ]
            written = set(store.set_captions(updates))
            for update in updates:
                (outcome.done if update.id in written else outcome.skipped).append(update.id)
        for image_id, error in outcome.failed.items():
            store.set_failed(image_id, records[image_id].content_hash, "caption", error)
    except TRANSIENT_ERRORS as exc:
        return _all_retry(ids, outcome, exc)
    return outcome


def _all_retry(ids: list[str], partial: BatchOutcome, exc: Exception) -> BatchOutcome:
    """A batch-level transient failure: everything not already written is retried."""
    log.warning("transient failure, batch will be retried: %s", exc)
    outcome = BatchOutcome(done=list(partial.done), follow_up=list(partial.follow_up))
    finished = set(partial.done)
    for image_id in dict.fromkeys(ids):
        if image_id not in finished:
            outcome.retry[image_id] = f"{type(exc).__name__}: {exc}"
    return outcome
