"""The two worker stages, as plain functions of ids: embed (image -> vector) and caption.

Each stage takes a batch of image ids and reports, per id, whether it is done, failed for good
(a broken image: never retried), to be retried (store or blob storage unreachable), or skipped
(deleted meanwhile, or already done by an earlier delivery). The Celery adapter turns that
report into acknowledgements, retries and follow-up tasks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from imagesearch import imaging
from imagesearch.blobs import BlobMissing, BlobStore, thumbnail_key
from imagesearch.config import Settings
from imagesearch.errors import PermanentError, TransientError
from imagesearch.models import Captioner, ClipEncoder
from imagesearch.models.clip import PixelInput
from imagesearch.records import ImageRecord
from imagesearch.s3.sources import read_original
from imagesearch.stores.base import CaptionUpdate, ImageVectorUpdate, Store
from imagesearch.vocab import CaptionStatus, Stage, Status

log = logging.getLogger(__name__)

# Besides the domain's own transient errors: a socket that failed below our adapters.
TRANSIENT_ERRORS = (TransientError, ConnectionError, TimeoutError)


@dataclass
class BatchOutcome:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retry: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    # Ids the next stage should process (the caption stage after embedding).
    follow_up: list[str] = field(default_factory=list)
    # Seconds from the record's created_at to the return of the store write that made it searchable
    # (embed) or captioned (caption), for the ids this batch did so for the first time; a re-embed
    # after a model change or a redelivery is not an upload's latency. The worker feeds it to
    # metrics.observe_outcome; reindex runs the stages without that, so it is never observed there.
    since_upload: dict[str, float] = field(default_factory=dict)


def _fetch_and_decode(blobs: BlobStore, key: str, settings: Settings, min_side: int) -> Image.Image:
    data = read_original(key, blobs, settings.ingest.max_upload_bytes)
    return imaging.decode(data, min_side=min_side, max_pixels=settings.ingest.max_image_pixels)


def _sort_error(image_id: str, exc: BaseException, outcome: BatchOutcome) -> None:
    """File a per-image error as permanent (failed) or transient (retry); re-raise anything else."""
    if isinstance(exc, BlobMissing):
        outcome.failed[image_id] = "stored image is missing"
    elif isinstance(exc, PermanentError):  # InvalidImage, or larger than allowed
        outcome.failed[image_id] = str(exc)
    elif isinstance(exc, TRANSIENT_ERRORS):
        outcome.retry[image_id] = f"{type(exc).__name__}: {exc}"
    else:
        raise exc


def _load_images(records: list[ImageRecord], key_of: Callable[[ImageRecord], str], blobs: BlobStore,
                 settings: Settings, min_side: int, outcome: BatchOutcome) -> list[tuple[ImageRecord, Image.Image]]:
    """Fetch and decode in threads (Pillow and boto3 release the GIL); sort errors by kind."""
    loaded: list[tuple[ImageRecord, Image.Image]] = []
    if not records:
        return loaded
    with ThreadPoolExecutor(max_workers=min(settings.workers.decode_threads, len(records))) as pool:
        futures = [pool.submit(_fetch_and_decode, blobs, key_of(r), settings, min_side) for r in records]
        for record, future in zip(records, futures):
            try:
                loaded.append((record, future.result()))
            except Exception as exc:  # noqa: BLE001 - sorted, or re-raised, by _sort_error
                _sort_error(record.id, exc, outcome)
    return loaded


@dataclass(frozen=True)
class _Prepared:
    record: ImageRecord
    pixels: PixelInput
    thumbnail: bytes
    size: tuple[int, int]
    taken_at: float | None


def _prepare(record: ImageRecord, blobs: BlobStore, settings: Settings, clip: ClipEncoder) -> _Prepared:
    """Everything an image needs before the model: fetch, reduced-size decode, model input, thumbnail,
    and the EXIF date (read from the decoded image's EXIF segment, which decode keeps: no second decode)."""
    image = _fetch_and_decode(blobs, record.blob_key, settings, settings.ingest.decode_min_side)
    return _Prepared(record, clip.preprocess(image), imaging.thumbnail_jpeg(image, settings.ingest.thumbnail_size),
                     image.size, imaging.taken_at(image))


def _embed_todo(todo: list[ImageRecord], settings: Settings, store: Store, blobs: BlobStore, clip: ClipEncoder,
                outcome: BatchOutcome) -> None:
    """Decode in threads while the model runs: every image is submitted up front, and inference on
    model batch i proceeds while the threads decode batch i+1."""
    step = settings.workers.embed_batch_size
    with ThreadPoolExecutor(max_workers=settings.workers.decode_threads) as pool:
        futures = [pool.submit(_prepare, record, blobs, settings, clip) for record in todo]
        for start in range(0, len(todo), step):
            ready: list[_Prepared] = []
            for record, future in zip(todo[start:start + step], futures[start:start + step]):
                try:
                    ready.append(future.result())
                except Exception as exc:  # noqa: BLE001 - sorted, or re-raised, by _sort_error
                    _sort_error(record.id, exc, outcome)
            if not ready:
                continue
            vectors = clip.encode_pixels(clip.collate([p.pixels for p in ready]))
            updates = []
            for prepared, vector in zip(ready, vectors):
                key = thumbnail_key(prepared.record.id)
                blobs.put(key, prepared.thumbnail, "image/jpeg")
                width, height = prepared.size
                updates.append(ImageVectorUpdate(id=prepared.record.id, content_hash=prepared.record.content_hash,
                                                 vector=vector, model=clip.identity, thumb_key=key, width=width,
                                                 height=height, taken_at=prepared.taken_at))
            written = set(store.set_image_vectors(updates))
            _note_since_upload([p.record for p in ready if p.record.status != Status.INDEXED], written, outcome)
            for update in updates:
                (outcome.done if update.id in written else outcome.skipped).append(update.id)
            outcome.follow_up.extend(u.id for u in updates if u.id in written)


def _note_since_upload(first_time: list[ImageRecord], written: set[str], outcome: BatchOutcome) -> None:
    """Upload-to-now for the records just written for the first time. ``created_at`` is the API
    host's clock: a worker on a host whose clock is behind would see negative spans, kept at 0."""
    now = time.time()
    for record in first_time:
        if record.id in written:
            outcome.since_upload[record.id] = max(0.0, now - record.created_at)


def _run_stage(stage: Stage, ids: list[str], store: Store,
               work: Callable[[dict[str, ImageRecord], BatchOutcome], None]) -> BatchOutcome:
    """Load the records, let ``work`` fill the outcome, record its permanent failures; a transient
    error on the way turns everything not yet written into retries."""
    outcome = BatchOutcome()
    try:
        records = store.get_many(ids)
        work(records, outcome)
        for image_id, error in outcome.failed.items():
            store.set_failed(image_id, records[image_id].content_hash, stage, error)
    except TRANSIENT_ERRORS as exc:
        return _all_retry(ids, outcome, exc)
    return outcome


def embed_batch(ids: list[str], *, settings: Settings, store: Store, blobs: BlobStore,
                clip: ClipEncoder) -> BatchOutcome:
    def work(records: dict[str, ImageRecord], outcome: BatchOutcome) -> None:
        todo: list[ImageRecord] = []
        for image_id in dict.fromkeys(ids):
            record = records.get(image_id)
            if record is None:
                outcome.skipped.append(image_id)  # deleted since it was queued
            elif record.status == Status.INDEXED and record.image_model == clip.identity:
                outcome.skipped.append(image_id)  # a redelivery: already done
                if record.caption_status == CaptionStatus.PENDING:
                    outcome.follow_up.append(image_id)
            else:
                todo.append(record)
        _embed_todo(todo, settings, store, blobs, clip, outcome)

    return _run_stage(Stage.EMBED, ids, store, work)


def caption_batch(ids: list[str], *, settings: Settings, store: Store, blobs: BlobStore,
                  captioner: Captioner, clip: ClipEncoder) -> BatchOutcome:
    def work(records: dict[str, ImageRecord], outcome: BatchOutcome) -> None:
        todo = [record for record in (records.get(i) for i in dict.fromkeys(ids))
                if record is not None and not _nothing_to_caption(record, captioner, clip)]
        chosen = {record.id for record in todo}
        outcome.skipped.extend(i for i in dict.fromkeys(ids) if i not in chosen)
        loaded = _load_images(todo, lambda r: r.thumb_key, blobs, settings, settings.ingest.thumbnail_size, outcome)
        if not loaded:
            return
        captions = captioner.caption([image for _, image in loaded])
        vectors = clip.encode_texts(captions)
        updates = [
            CaptionUpdate(id=record.id, content_hash=record.content_hash, caption=caption, vector=vector,
                          caption_model=captioner.identity, text_model=clip.identity)
            for (record, _), caption, vector in zip(loaded, captions, vectors)
        ]
        written = set(store.set_captions(updates))
        _note_since_upload([r for r, _ in loaded if r.caption_status != CaptionStatus.DONE], written, outcome)
        for update in updates:
            (outcome.done if update.id in written else outcome.skipped).append(update.id)

    return _run_stage(Stage.CAPTION, ids, store, work)


def _nothing_to_caption(record: ImageRecord, captioner: Captioner, clip: ClipEncoder) -> bool:
    """Nothing to do: not embedded yet (no thumbnail), or already captioned by these models."""
    if record.status != Status.INDEXED or not record.thumb_key:
        return True
    return (record.caption_status == CaptionStatus.DONE and record.caption_model == captioner.identity
            and record.text_model == clip.identity)


def _all_retry(ids: list[str], partial: BatchOutcome, exc: Exception) -> BatchOutcome:
    """A batch-level transient failure: everything not already written is retried."""
    log.warning("transient failure, batch will be retried: %s", exc)
    outcome = BatchOutcome(done=list(partial.done), follow_up=list(partial.follow_up),
                           since_upload=dict(partial.since_upload))
    finished = set(partial.done)
    for image_id in dict.fromkeys(ids):
        if image_id not in finished:
            outcome.retry[image_id] = f"{type(exc).__name__}: {exc}"
    return outcome
