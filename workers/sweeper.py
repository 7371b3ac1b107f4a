"""Embed workers re-send records whose message was lost (:mod:`imagesearch.requeue`).

A consumer step: it runs on the worker's timer, in its main process, every tenth of
``REQUEUE_STALE_AFTER_SECONDS``, and is armed again on every consumer start (a broker reconnect
restarts the consumer on a cleared timer). A pass does nothing while the embed queue holds
messages, so a backlog is never duplicated; a Redis lock lets one embed worker per interval do
it, and a key per record re-sends each at most once per two periods. (Checking the
unacknowledged messages too was tried: after a broker restart kombu kept some of them for
minutes, which held every re-send back.)
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import bootsteps

from imagesearch.config import Settings, get_settings
from imagesearch.requeue import requeue_stale
from imagesearch.services import Services
from imagesearch.vocab import Stage
from wiring import build_services

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _services() -> Services:
    return build_services(get_settings())


def sweep(settings: Settings, interval: float) -> list[str]:
    """One pass: nothing while embed messages wait, or another worker holds the lock."""
    svc = _services()
    keys, period = settings.keys, settings.workers.requeue_stale_after_seconds
    if svc.queue.depths()[Stage.EMBED] > 0:
        return []
    if not svc.redis.set(keys.requeue_sweep_lock, "1", nx=True, ex=max(1, int(interval))):
        return []

    def send_once(image_id: str) -> bool:
        if not svc.redis.set(keys.requeued(image_id), "1", nx=True, ex=2 * period):
            return False
        svc.queue.enqueue(Stage.EMBED, image_id)
        return True

    return requeue_stale(svc.store, send_once, older_than_seconds=period)


def _guarded_sweep(settings: Settings, interval: float) -> None:
    try:
        sweep(settings, interval)
    except Exception:  # the next interval tries again; the worker must keep consuming
        log.exception("re-sending stale queued records failed; retrying in %.0f s", interval)


class RequeueStale(bootsteps.StartStopStep):
    """Consumer step of embed workers (``app.steps["consumer"]``, see workers/celery_app.py)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref = None

    def start(self, consumer: Any) -> None:
        settings = get_settings()
        queues = {q.name for q in getattr(getattr(consumer, "task_consumer", None), "queues", None) or []}
        if settings.workers.requeue_stale_after_seconds <= 0 or settings.keys.queue(Stage.EMBED) not in queues:
            return
        interval = max(1.0, settings.workers.requeue_stale_after_seconds / 10)
        self.tref = consumer.timer.call_repeatedly(interval, _guarded_sweep, (settings, interval))
        log.info("re-sending records queued for over %d s when the embed queue is empty (checked every %.0f s)",
                 settings.workers.requeue_stale_after_seconds, interval)

    def stop(self, consumer: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
