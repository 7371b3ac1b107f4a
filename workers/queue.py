"""The Celery implementation of the domain's task queue port, the only sender of Celery messages.

Messages are sent by task name, so producers (API, CLI, S3 listener) import neither the task code
nor the models; kombu's connection errors become the domain's :class:`QueueUnavailable`.
"""

from __future__ import annotations

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from imagesearch.config import Settings
from imagesearch.redis_state import queue_depths
from imagesearch.taskqueue import QueueUnavailable
from imagesearch.vocab import Stage
from workers.celery_app import TASK_OF_STAGE

_BROKER_ERRORS = (OperationalError, ConnectionError, TimeoutError, OSError)


class CeleryTaskQueue:
    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.keys = settings.keys
        self.redis_url = settings.redis.url

    def enqueue(self, stage: Stage, image_id: str) -> None:
        stage = Stage(stage)
        try:
            self.app.send_task(TASK_OF_STAGE[stage], args=(image_id,), queue=self.keys.queue(stage))
        except _BROKER_ERRORS as exc:
            raise QueueUnavailable(f"could not queue {stage} of {image_id}: {exc}") from exc

    def depths(self) -> dict[Stage, int]:
        """Messages waiting per stage (the lengths of the queues' Redis lists)."""
        try:
            return queue_depths(self.redis_url, self.keys, timeout=10)
        except (redis.RedisError, OSError) as exc:
            raise QueueUnavailable(f"could not read the queue depths: {exc}") from exc
