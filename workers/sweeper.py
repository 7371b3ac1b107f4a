"""Embed workers re-send records whose message was lost (:mod:`imagesearch.requeue`).

Runs on the worker's own timer, in its main process, every tenth of
``REQUEUE_STALE_AFTER_SECONDS``, and only while no embed message is waiting or being processed
(kombu keeps the unacknowledged ones in a Redis hash); a Redis lock lets one embed worker per
interval do it.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache

from celery.signals import worker_ready

from imagesearch.config import Settings, get_settings
from imagesearch.requeue import requeue_stale
from imagesearch.stores import Store, open_store
from workers.celery_app import app
from workers.enqueue import enqueue_embed

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _store() -> Store:
    return open_store(get_settings())


def _embed_in_flight(client, unacked_key: str, queue: str) -> bool:
    for raw in client.hvals(unacked_key):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, TypeError, IndexError):
            continue
        if routing_key == queue:
            return True
    return False


def sweep(settings: Settings, interval: float) -> list[str]:
    """One pass: nothing while embed messages wait or run, or another worker holds the lock."""
    queue = settings.queue("embed")
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client = channel.client
        if int(client.llen(queue)) > 0 or _embed_in_flight(client, channel.unacked_key, queue):
            return []
        if not client.set(settings.queue("requeue-sweep-lock"), "1", nx=True, ex=max(1, int(interval))):
            return []
    return requeue_stale(_store(), enqueue_embed, older_than_seconds=settings.requeue_stale_after_seconds)


def _guarded_sweep(settings: Settings, interval: float) -> None:
    try:
        sweep(settings, interval)
    except Exception:  # noqa: BLE001 - the next interval tries again; the worker must keep consuming
        log.exception("re-sending stale queued records failed; retrying in %.0f s", interval)


@worker_ready.connect
def _start(sender=None, **_kwargs) -> None:
    settings = get_settings()
    queues = getattr(getattr(sender, "task_consumer", None), "queues", None) or []
    if settings.requeue_stale_after_seconds <= 0 or settings.queue("embed") not in {q.name for q in queues}:
        return
    interval = max(1.0, settings.requeue_stale_after_seconds / 10)
    sender.timer.call_repeatedly(interval, _guarded_sweep, (settings, interval))
    log.info("re-sending records queued for over %d s when the embed queue is empty (checked every %.0f s)",
             settings.requeue_stale_after_seconds, interval)
