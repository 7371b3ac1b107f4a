"""Batched embed and caption tasks: thin wrappers that call :mod:`imagesearch.pipeline`.

Both use celery-batches: the worker buffers single-image messages and hands a list to the task
when ``batch_size`` arrived or ``batch_flush_seconds`` passed, so uploads that arrive one by one
still reach the model in batches.
"""

from __future__ import annotations

import logging
import random
from functools import lru_cache

from celery_batches import Batches, SimpleRequest

from imagesearch import pipeline
from imagesearch.blobs import open_blobs
from imagesearch.config import get_settings
from imagesearch.models import get_captioner, get_clip
from imagesearch.stores import open_store
from workers.celery_app import CAPTION_TASK, EMBED_TASK, app, check_visibility_timeout

log = logging.getLogger(__name__)
settings = get_settings()
check_visibility_timeout(settings)


@lru_cache(maxsize=1)
def _resources():
    """Opened once per worker process, after the fork."""
    return open_store(settings), open_blobs(settings)


def _backoff(attempt: int) -> float:
    # Exponential with full jitter: retries from many workers do not arrive in lockstep.
    ceiling = min(settings.retry_backoff_max_seconds, settings.retry_backoff_seconds * 2 ** attempt)
    return random.uniform(ceiling / 2, ceiling)


def _settle(task, requests: list[SimpleRequest], outcome: pipeline.BatchOutcome, stage: str, store) -> None:
    """Re-send transient failures with backoff, or fail them past the retry limit."""
    attempts = {r.args[0]: int(r.kwargs.get("attempt", 0)) for r in requests}
    for image_id, error in outcome.retry.items():
        attempt = attempts.get(image_id, 0)
        if attempt < settings.max_retries:
            task.apply_async((image_id,), {"attempt": attempt + 1}, countdown=_backoff(attempt))
        else:
            log.error("%s of %s failed after %d attempts: %s", stage, image_id, attempt + 1, error)
            record = store.get(image_id)
            if record is not None:
                store.set_failed(image_id, record.content_hash, stage, f"gave up after {attempt + 1} attempts: {error}")
    for image_id, error in outcome.failed.items():
        log.warning("%s of %s failed: %s", stage, image_id, error)
    log.info("%s batch: %d done, %d failed, %d retried, %d skipped", stage, len(outcome.done),
             len(outcome.failed), len(outcome.retry), len(outcome.skipped))


def _ids(requests: list[SimpleRequest]) -> list[str]:
    return [str(r.args[0]) for r in requests if r.args]


def _guarded(stage: str, run, requests: list[SimpleRequest]) -> pipeline.BatchOutcome:
    """An unexpected error must not acknowledge the batch as done: retry every id instead."""
    try:
        return run(_ids(requests))
    except Exception as exc:  # noqa: BLE001 - anything unforeseen becomes a bounded retry
        log.exception("%s batch crashed", stage)
        return pipeline.BatchOutcome(retry={i: f"{type(exc).__name__}: {exc}" for i in _ids(requests)})


@app.task(base=Batches, name=EMBED_TASK, acks_late=True, flush_every=settings.embed_flush_every,
          flush_interval=settings.batch_flush_seconds)
def embed(requests: list[SimpleRequest]) -> None:
    store, blobs = _resources()
    outcome = _guarded("embed", lambda ids: pipeline.embed_batch(
        ids, settings=settings, store=store, blobs=blobs, clip=get_clip(settings)), requests)
    for image_id in outcome.follow_up:
        caption.apply_async((image_id,))
    _settle(embed, requests, outcome, "embed", store)


@app.task(base=Batches, name=CAPTION_TASK, acks_late=True, flush_every=settings.caption_batch_size,
          flush_interval=settings.batch_flush_seconds)
def caption(requests: list[SimpleRequest]) -> None:
    store, blobs = _resources()
    outcome = _guarded("caption", lambda ids: pipeline.caption_batch(
        ids, settings=settings, store=store, blobs=blobs, captioner=get_captioner(settings),
        clip=get_clip(settings)), requests)
    _settle(caption, requests, outcome, "caption", store)
