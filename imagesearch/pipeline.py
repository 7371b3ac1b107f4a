"""The two worker stages, as plain functions of ids: embed (image -> vector) and caption.

Each stage takes a batch of image ids and reports, per id, whether it is done, failed for good
(a broken image: never retried), to be retried (store or blob storage unreachable), or skipped
(deleted meanwhile, or already done by an earlier delivery). The Celery adapter turns that
report into acknowledgements, retries and follow-up tasks.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
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
    size: tuple[int, int]  # (width, height) of the picture as shown: full size, EXIF orientation applied
    taken_at: float | None


def _prepare(record: ImageRecord, blobs: BlobStore, settings: Settings, clip: ClipEncoder) -> _Prepared:
    """Everything an image needs before the model, on the Pillow path: fetch, then :func:`_prepare_pillow`."""
    return _prepare_pillow(record, read_original(record.blob_key, blobs, settings.ingest.max_upload_bytes),
                           settings, clip)


def _prepare_pillow(record: ImageRecord, data: bytes, settings: Settings, clip: ClipEncoder) -> _Prepared:
    """Reduced-size decode, model input, thumbnail, the full size from the header, and the EXIF date
    (read from the decoded image's EXIF segment, which decode keeps: no second decode)."""
    image, size = imaging.decode_with_size(data, min_side=settings.ingest.decode_min_side,
                                           max_pixels=settings.ingest.max_image_pixels)
    return _Prepared(record, clip.preprocess(image), imaging.thumbnail_jpeg(image, settings.ingest.thumbnail_size),
                     size, imaging.taken_at(image))


def _model_batch_size(settings: Settings, clip: ClipEncoder) -> int:
    return settings.workers.gpu_batch_size if clip.device.type == "cuda" else settings.workers.embed_batch_size


def _uses_tensor_path(settings: Settings, clip: ClipEncoder) -> bool:
    mode = settings.workers.tensor_decode
    if mode == "off" or (mode == "auto" and clip.device.type != "cuda"):
        return False
    _say_once(clip.identity, str(clip.device), clip.preprocesses_tensors)
    return clip.preprocesses_tensors


@functools.cache
def _say_once(identity: str, device: str, tensors: bool) -> None:
    """Which path a worker's embed stage runs, logged once per model and device."""
    if tensors:
        log.info("embed stage: tensor path on %s (batched JPEG decode, preprocessing and thumbnails there)", device)
    else:
        log.info("embed stage: CLIP %s preprocesses with Pillow only, so the tensor path is off", identity)


def _embed_todo(todo: list[ImageRecord], settings: Settings, store: Store, blobs: BlobStore, clip: ClipEncoder,
                outcome: BatchOutcome) -> None:
    if _uses_tensor_path(settings, clip):
        _embed_todo_on_device(todo, settings, store, blobs, clip, outcome)
    else:
        _embed_todo_pillow(todo, settings, store, blobs, clip, outcome)


def _embed_todo_pillow(todo: list[ImageRecord], settings: Settings, store: Store, blobs: BlobStore,
                       clip: ClipEncoder, outcome: BatchOutcome) -> None:
    """Decode in threads while the model runs: every image is submitted up front, and inference on
    model batch i proceeds while the threads decode batch i+1."""
    step = _model_batch_size(settings, clip)
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
            _record_written(ready, *_store_vectors(ready, vectors, store, blobs, clip), outcome)


def _store_vectors(ready: list[_Prepared], vectors: np.ndarray, store: Store, blobs: BlobStore,
                   clip: ClipEncoder) -> tuple[list[ImageVectorUpdate], set[str]]:
    """Thumbnails to blobs, then vectors to the store (one write): the updates and the ids written."""
    updates = []
    for prepared, vector in zip(ready, vectors):
        key = thumbnail_key(prepared.record.id)
        blobs.put(key, prepared.thumbnail, "image/jpeg")
        width, height = prepared.size
        updates.append(ImageVectorUpdate(id=prepared.record.id, content_hash=prepared.record.content_hash,
                                         vector=vector, model=clip.identity, thumb_key=key, width=width,
                                         height=height, taken_at=prepared.taken_at))
    return updates, set(store.set_image_vectors(updates))


def _record_written(ready: list[_Prepared], updates: list[ImageVectorUpdate], written: set[str],
                    outcome: BatchOutcome) -> None:
    _note_since_upload([p.record for p in ready if p.record.status != Status.INDEXED], written, outcome)
    for update in updates:
        (outcome.done if update.id in written else outcome.skipped).append(update.id)
    outcome.follow_up.extend(u.id for u in updates if u.id in written)


# -- the tensor path (GPU workers) -----------------------------------------------------------------
#
# Four stages overlap, each bounded to about one model batch: fetch threads read originals and check
# their headers (batch i+2), one decoder thread decodes JPEGs in batches on the model's device, resizes,
# normalises and makes thumbnails there (batch i+1, on its own CUDA stream), the calling thread runs the
# model (batch i), and one writer thread stores thumbnails and vectors (batch i-1).

# Pixels decoded on the device at once: a model batch of 12 MP photos would otherwise hold gigabytes of
# full-size decodes; 256 MP is a batch of 256 one-megapixel images in one nvJPEG call.
_DECODE_PIXEL_BUDGET = 256_000_000


@dataclass(frozen=True)
class _Fetched:
    """An original whose header passed the checks and which the tensor path decodes."""

    record: ImageRecord
    data: bytes
    header: imaging.Header


def _fetch_for_device(record: ImageRecord, blobs: BlobStore, settings: Settings,
                      clip: ClipEncoder) -> _Fetched | _Prepared:
    """In a fetch thread: read the original and check its header as every decode does (allowlist, pixel
    cap, before any pixel); a JPEG the tensor path takes goes on to the device, anything else through
    the Pillow path here."""
    data = read_original(record.blob_key, blobs, settings.ingest.max_upload_bytes)
    head = imaging.header(imaging.open_image(data, settings.ingest.max_image_pixels))
    if imaging.tensor_decodable(head, data):
        return _Fetched(record, data, head)
    return _prepare_pillow(record, data, settings, clip)


def _within_pixel_budget(items: list[_Fetched]) -> Iterator[list[_Fetched]]:
    group: list[_Fetched] = []
    pixels = 0
    for item in items:
        size = item.header.width * item.header.height
        if group and pixels + size > _DECODE_PIXEL_BUDGET:
            yield group
            group, pixels = [], 0
        group.append(item)
        pixels += size
    if group:
        yield group


_Failures = list[tuple[ImageRecord, BaseException]]


def _decode_on_device(items: list[_Fetched], settings: Settings, clip: ClipEncoder) -> tuple[list[_Prepared],
                                                                                               _Failures]:
    """Batched decode on the model's device, EXIF orientation, model input and thumbnail from the one
    decoded tensor; an image that fails any of it goes through the Pillow path instead."""
    prepared: list[_Prepared] = []
    fallback: list[_Fetched] = []
    for group in _within_pixel_budget(items):
        decoded = imaging.decode_jpegs([item.data for item in group], clip.device)
        fallback.extend(item for item, image in zip(group, decoded) if image is None)
        good = [(item, image) for item, image in zip(group, decoded) if image is not None]
        if not good:
            continue
        try:
            images = [imaging.orient(image, item.header.orientation or 1) for item, image in good]
            pixels = clip.preprocess_tensors(images)
            thumbnails = imaging.thumbnails_from_tensors(images, settings.ingest.thumbnail_size)
        except RuntimeError as exc:  # device memory, a kernel the device lacks: Pillow can still do it
            log.warning("tensor path failed for %d images, using Pillow: %s", len(good), exc)
            fallback.extend(item for item, _ in good)
            continue
        prepared.extend(_Prepared(item.record, pixel, thumbnail, item.header.size, item.header.taken_at)
                        for (item, _), pixel, thumbnail in zip(good, pixels, thumbnails))
        del images, decoded, good  # the full-size decodes go now: only model inputs and thumbnails go on
    failures: _Failures = []
    for item in fallback:
        try:
            prepared.append(_prepare_pillow(item.record, item.data, settings, clip))
        except Exception as exc:  # noqa: BLE001 - sorted, or re-raised, by _sort_error in the caller
            failures.append((item.record, exc))
    return prepared, failures


def _decode_chunk(fetches: list[tuple[ImageRecord, Future]], settings: Settings, clip: ClipEncoder,
                  stream: torch.cuda.Stream | None) -> tuple[list[_Prepared], _Failures, torch.cuda.Event | None]:
    """In the decoder thread: one model batch, from fetched bytes to model inputs and thumbnails.
    Device work runs on ``stream`` so it overlaps the model on the default stream; the event returned
    marks its end, for the model to wait on."""
    ready: list[_Prepared] = []
    failures: _Failures = []
    on_device: list[_Fetched] = []
    for record, future in fetches:
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - sorted, or re-raised, by _sort_error in the caller
            failures.append((record, exc))
            continue
        (on_device if isinstance(result, _Fetched) else ready).append(result)
    with torch.inference_mode(), (torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()):
        decoded, failed = _decode_on_device(on_device, settings, clip)
        event = stream.record_event() if stream is not None else None
    return ready + decoded, failures + failed, event


def _embed_todo_on_device(todo: list[ImageRecord], settings: Settings, store: Store, blobs: BlobStore,
                          clip: ClipEncoder, outcome: BatchOutcome) -> None:
    step = _model_batch_size(settings, clip)
    chunks = [todo[start:start + step] for start in range(0, len(todo), step)]
    if not chunks:
        return
    stream = torch.cuda.Stream(clip.device) if clip.device.type == "cuda" else None
    with (ThreadPoolExecutor(max_workers=settings.workers.decode_threads) as fetchers,
          ThreadPoolExecutor(max_workers=1) as decoder, ThreadPoolExecutor(max_workers=1) as writer):
        def fetch(chunk: list[ImageRecord]) -> list[tuple[ImageRecord, Future]]:
            return [(r, fetchers.submit(_fetch_for_device, r, blobs, settings, clip)) for r in chunk]

        fetching = [fetch(chunk) for chunk in chunks[:2]]
        decoding = decoder.submit(_decode_chunk, fetching.pop(0), settings, clip, stream)
        writing: Future | None = None
        for index in range(len(chunks)):
            ready, failures, event = decoding.result()
            if index + 1 < len(chunks):
                decoding = decoder.submit(_decode_chunk, fetching.pop(0), settings, clip, stream)
            if index + 2 < len(chunks):
                fetching.append(fetch(chunks[index + 2]))
            for record, exc in failures:
                _sort_error(record.id, exc, outcome)
            vectors = None
            if ready:
                if event is not None:
                    torch.cuda.current_stream(clip.device).wait_event(event)
                vectors = clip.encode_pixels(clip.collate([p.pixels for p in ready]))
            if writing is not None:
                _record_written(*writing.result(), outcome)
                writing = None
            if ready:
                writing = writer.submit(_store_in_writer, ready, vectors, store, blobs, clip)
        if writing is not None:
            _record_written(*writing.result(), outcome)


def _store_in_writer(ready: list[_Prepared], vectors: np.ndarray, store: Store, blobs: BlobStore,
                     clip: ClipEncoder) -> tuple[list[_Prepared], list[ImageVectorUpdate], set[str]]:
    return (ready, *_store_vectors(ready, vectors, store, blobs, clip))


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
        if not todo:
            return
        step = _caption_call_size(settings, captioner, len(todo))
        chunks = [todo[start:start + step] for start in range(0, len(todo), step)]
        if len(chunks) == 1:  # the CPU worker: one generate call for the task, as it has always run
            loaded = _load_images(todo, lambda r: r.thumb_key, blobs, settings, settings.ingest.thumbnail_size,
                                  outcome)
            if loaded:
                _store_captions(loaded, captioner.caption([image for _, image in loaded]), store, captioner,
                                clip, outcome)
            return
        _caption_overlapped(chunks, settings, store, blobs, captioner, clip, outcome)

    return _run_stage(Stage.CAPTION, ids, store, work)


def _caption_call_size(settings: Settings, captioner: Captioner, count: int) -> int:
    # getattr: a stand-in captioner (tests record what the real one is given) has no device.
    device = getattr(captioner, "device", None)
    if isinstance(device, torch.device) and device.type == "cuda":
        return settings.workers.caption_gpu_batch_size
    return max(1, count)


def _caption_overlapped(chunks: list[list[ImageRecord]], settings: Settings, store: Store, blobs: BlobStore,
                        captioner: Captioner, clip: ClipEncoder, outcome: BatchOutcome) -> None:
    """GPU captioning in generate calls of ``CAPTION_GPU_BATCH_SIZE``, overlapped and bounded: the
    thumbnails of call i+1 load in the decode threads while call i generates; call i+1's image
    preprocessing runs in a second thread and waits on the captioner's lock while call i holds it,
    so the GPU goes from one generate to the next; call i's text vectors and store write follow
    while i+1 generates."""
    size = settings.ingest.thumbnail_size
    with (ThreadPoolExecutor(max_workers=settings.workers.decode_threads) as loaders,
          ThreadPoolExecutor(max_workers=2) as generators):
        def load(chunk: list[ImageRecord]) -> list[tuple[ImageRecord, Future]]:
            return [(r, loaders.submit(_fetch_and_decode, blobs, r.thumb_key, settings, size)) for r in chunk]

        loading = load(chunks[0])
        pending: deque[tuple[list[tuple[ImageRecord, Image.Image]], Future]] = deque()
        for index in range(len(chunks)):
            loaded: list[tuple[ImageRecord, Image.Image]] = []
            for record, future in loading:
                try:
                    loaded.append((record, future.result()))
                except Exception as exc:  # noqa: BLE001 - sorted, or re-raised, by _sort_error
                    _sort_error(record.id, exc, outcome)
            if index + 1 < len(chunks):
                loading = load(chunks[index + 1])
            if loaded:
                pending.append((loaded, generators.submit(captioner.caption, [image for _, image in loaded])))
            while pending and (len(pending) > 1 or index + 1 == len(chunks)):
                done, captions = pending.popleft()
                _store_captions(done, captions.result(), store, captioner, clip, outcome)


def _store_captions(loaded: list[tuple[ImageRecord, Image.Image]], captions: list[str], store: Store,
                    captioner: Captioner, clip: ClipEncoder, outcome: BatchOutcome) -> None:
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
