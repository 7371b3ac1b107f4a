"""Batched embed and caption tasks: thin wrappers that call :mod:`imagesearch.pipeline`.

Both use celery-batches (through :class:`workers.batches.ReliableBatches`): the worker buffers
single-image messages and hands a list to the task when ``*_flush_every`` arrived or, while a
pool process is free, ``batch_flush_seconds`` passed: uploads that arrive one by one still reach the
model in batches, and under a backlog the batches are full.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

from celery_batches import SimpleRequest

from imagesearch import logging_setup, metrics, pipeline
from imagesearch.backoff import equal_jitter
from imagesearch.config import get_settings
from imagesearch.services import Services
from imagesearch.vocab import Stage
from wiring import build_services
from workers.batches import ReliableBatches
from workers.celery_app import CAPTION_TASK, EMBED_TASK, ISOLATED_TASK, app, check_visibility_timeout

log = logging.getLogger(__name__)
settings = get_settings()
check_visibility_timeout(settings)


@lru_cache(maxsize=1)
def _services() -> Services:
    """Built once per worker process, after the fork; each service opens on first use."""
    return build_services(settings)


def _backoff(attempt: int) -> float:
    workers = settings.workers
    return equal_jitter(attempt, base=workers.retry_backoff_seconds, cap=workers.retry_backoff_max_seconds)


def _run(stage: Stage, ids: list[str]) -> pipeline.BatchOutcome:
    svc = _services()
    if stage == Stage.EMBED:
        return pipeline.embed_batch(ids, settings=settings, store=svc.store, blobs=svc.blobs, clip=svc.clip)
    return pipeline.caption_batch(ids, settings=settings, store=svc.store, blobs=svc.blobs,
                                  captioner=svc.captioner, clip=svc.clip)


def _guarded(stage: Stage, ids: list[str]) -> pipeline.BatchOutcome:
    """An unexpected error must not acknowledge the batch as done: retry every id instead."""
    started = time.perf_counter()
    try:
        outcome = _run(stage, ids)
    except Exception as exc:  # anything unforeseen becomes a bounded retry
        log.exception("%s batch crashed", stage)
        outcome = pipeline.BatchOutcome(retry={i: f"{type(exc).__name__}: {exc}" for i in ids})
    metrics.observe_outcome(stage, outcome, size=len(ids), seconds=time.perf_counter() - started)
    return outcome


def _settle(stage: Stage, attempts: dict[str, int], outcome: pipeline.BatchOutcome) -> None:
    """Follow-up work, then re-send transient failures with backoff, or fail them past the limit."""
    store = _services().store
    for image_id in outcome.follow_up:
        caption.apply_async((image_id,))
    task = _TASKS[stage]
    for image_id, error in outcome.retry.items():
        attempt = attempts.get(image_id, 0)
        if attempt < settings.workers.max_retries:
            task.apply_async((image_id,), {"attempt": attempt + 1}, countdown=_backoff(attempt))
        else:
            log.error("%s of %s failed after %d attempts: %s", stage, image_id, attempt + 1, error)
            metrics.count_images(stage, "gave_up")
            record = store.get(image_id)
            if record is not None:
                store.set_failed(image_id, record.content_hash, stage, f"gave up after {attempt + 1} attempts: {error}")
    for image_id, error in outcome.failed.items():
        log.warning("%s of %s failed: %s", stage, image_id, error)
    log.info("%s batch: %d done, %d failed, %d retried, %d skipped", stage, len(outcome.done),
             len(outcome.failed), len(outcome.retry), len(outcome.skipped))


def _handle(stage: Stage, requests: list[SimpleRequest]) -> bool:
    with logging_setup.log_context(stage=stage, task_ids=[r.id for r in requests],
                                   image_ids=[str(r.args[0]) for r in requests if r.args]):
        return _handle_batch(stage, requests)


def _handle_batch(stage: Stage, requests: list[SimpleRequest]) -> bool:
    """Process a batch; True when every message is accounted for (done, failed, or re-sent).

    False makes :class:`ReliableBatches` requeue the messages instead of acknowledging them."""
    attempts = {str(r.args[0]): int(r.kwargs.get("attempt", 0)) for r in requests if r.args}
    try:
        _process(stage, attempts)
    except Exception:  # e.g. the store or Redis unreachable before the batch could start
        log.exception("%s batch could not run; re-sending its %d messages", stage, len(attempts))
        task = _TASKS[stage]
        try:
            for image_id, attempt in attempts.items():
                task.apply_async((image_id,), {"attempt": attempt + 1}, countdown=_backoff(attempt))
            # The batch returned: these deliveries did not kill the worker.
            _services().ledger.settle(stage, list(attempts))
        except Exception:  # the broker is down too
            log.exception("re-sending failed too; the messages go back to the queue")
            return False
    return True


def _process(stage: Stage, attempts: dict[str, int]) -> None:
    ledger = _services().ledger
    ids = list(attempts)
    started = ledger.begin(stage, ids)
    # An image whose previous delivery never returned may be what killed the worker: process it
    # alone, so it cannot take the rest of a batch down with it again.
    suspects = [i for i in ids if started[i] > 1]
    for image_id in suspects:
        isolated.apply_async((stage, image_id, attempts[image_id]), queue=settings.keys.queue(stage))
    ids = [i for i in ids if started[i] == 1]
    if ids:
        _settle(stage, attempts, _guarded(stage, ids))
        ledger.settle(stage, ids)


@app.task(base=ReliableBatches, name=EMBED_TASK, acks_late=True, flush_every=settings.workers.embed_flush_every,
          flush_interval=settings.workers.batch_flush_seconds)
def embed(requests: list[SimpleRequest]) -> bool:
    return _handle(Stage.EMBED, requests)


@app.task(base=ReliableBatches, name=CAPTION_TASK, acks_late=True, flush_every=settings.workers.caption_batch_size,
          flush_interval=settings.workers.batch_flush_seconds)
def caption(requests: list[SimpleRequest]) -> bool:
    return _handle(Stage.CAPTION, requests)


@app.task(name=ISOLATED_TASK, acks_late=True, reject_on_worker_lost=True)
def isolated(stage: str, image_id: str, attempt: int = 0) -> None:
    """One suspect image on its own; past ``max_deliveries`` unfinished starts it becomes a dead letter."""
    with logging_setup.log_context(stage=stage, task_id=isolated.request.id, image_id=image_id):
        _isolated(Stage(stage), image_id, attempt)


def _isolated(stage: Stage, image_id: str, attempt: int) -> None:
    store, ledger = _services().store, _services().ledger
    started = ledger.begin(stage, [image_id])[image_id]
    if started > settings.workers.max_deliveries:
        reason = f"the worker died {started - 1} times while processing this image"
        log.error("dead letter: %s of %s: %s", stage, image_id, reason)
        record = store.get(image_id)
        if record is not None:
            store.set_failed(image_id, record.content_hash, stage, reason)
        ledger.bury(stage, image_id, reason)
        metrics.count_images(stage, "dead_letter")
        return
    _settle(stage, {image_id: attempt}, _guarded(stage, [image_id]))
    ledger.settle(stage, [image_id])


_TASKS = {Stage.EMBED: embed, Stage.CAPTION: caption}
