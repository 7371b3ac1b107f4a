"""The composition root: the one place that picks each port's implementation.

The API, the workers, the S3 listener and the CLI all get their services from
:func:`build_services`; tests pass overrides (a :class:`~imagesearch.taskqueue.MemoryTaskQueue`,
say) instead of patching modules.
"""

from __future__ import annotations

from imagesearch.config import Settings, get_settings
from imagesearch.services import Services
from imagesearch.taskqueue import TaskQueue


def build_services(settings: Settings | None = None, *, queue: TaskQueue | None = None) -> Services:
    settings = settings or get_settings()
    if queue is None:
        from workers.celery_app import celery_app_for
        from workers.queue import CeleryTaskQueue

        queue = CeleryTaskQueue(celery_app_for(settings), settings)
    return Services(settings, queue)
