"""The Celery application. Settings come from :mod:`imagesearch.config` (environment)."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery
from celery.signals import setup_logging

from imagesearch import logging_setup
from imagesearch.config import Settings, get_settings
from imagesearch.vocab import Stage

EMBED_TASK = "imagesearch.embed"
CAPTION_TASK = "imagesearch.caption"
ISOLATED_TASK = "imagesearch.isolated"
TASK_OF_STAGE = {Stage.EMBED: EMBED_TASK, Stage.CAPTION: CAPTION_TASK}


def make_celery(settings: Settings) -> Celery:
    app = Celery("imagesearch", broker=settings.redis.url, include=["workers.tasks"])
    app.conf.update(
        # A task is acknowledged only after its batch finished; a worker that dies mid-batch
        # leaves its messages to be redelivered instead of losing them.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Batching tasks buffer messages in the worker (WorkerSettings.prefetch_multiplier says how many);
        # `imagesearch worker STAGE` passes the figure for its own stages.
        worker_prefetch_multiplier=settings.workers.prefetch_multiplier(Stage),
        # A worker killed while holding kombu's restore mutex blocks redelivery until it expires
        # (300 s by default): never longer than the visibility timeout itself.
        broker_transport_options={"visibility_timeout": settings.workers.visibility_timeout_seconds,
                                  "unacked_mutex_expire": min(300, settings.workers.visibility_timeout_seconds)},
        broker_connection_retry_on_startup=True,
        # Each message held for its ETA (a retry's countdown) raises the prefetch by one: a bound,
        # so a flood of retries cannot pull the whole queue into one worker's memory.
        worker_eta_task_limit=1000,
        task_routes={
            EMBED_TASK: {"queue": settings.keys.queue(Stage.EMBED)},
            CAPTION_TASK: {"queue": settings.keys.queue(Stage.CAPTION)},
        },
        task_default_queue=settings.keys.queue("default"),
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # Events let Flower and `celery events` show tasks live.
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
    )
    from workers.sweeper import RequeueStale

    app.steps["consumer"].add(RequeueStale)
    return app


def check_visibility_timeout(settings: Settings) -> None:
    """Refuse a configuration where Redis would redeliver a task still within its retry window."""
    longest = settings.workers.retry_backoff_max_seconds + settings.workers.max_batch_seconds
    if settings.workers.visibility_timeout_seconds < longest:
        raise RuntimeError(
            f"IMAGESEARCH_VISIBILITY_TIMEOUT_SECONDS={settings.workers.visibility_timeout_seconds} is shorter than the "
            f"longest retry wait plus a batch ({longest:.0f} s): tasks would run twice"
        )


app = make_celery(get_settings())


@lru_cache(maxsize=8)
def _app_for_broker(redis_url: str, namespace: str) -> Celery:
    own = get_settings()
    return make_celery(own.model_copy(update={"redis": own.redis.model_copy(update={"url": redis_url,
                                                                                  "namespace": namespace})}))


def celery_app_for(settings: Settings) -> Celery:
    """The worker's app for the process's own settings; another broker or namespace gets its own app."""
    own = get_settings()
    if (settings.redis.url, settings.redis.namespace) == (own.redis.url, own.redis.namespace):
        return app
    return _app_for_broker(settings.redis.url, settings.redis.namespace)


@setup_logging.connect
def _json_logs(**_kwargs: object) -> None:
    """Celery's own lines and ours, one JSON object per line (imagesearch/logging_setup.py)."""
    logging_setup.configure()
