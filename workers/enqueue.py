"""Sending work by task name, so producers (API, CLI) need not import the task code or models."""

from __future__ import annotations

from imagesearch.config import get_settings
from workers.celery_app import CAPTION_TASK, EMBED_TASK, app

_TASKS = {"embed": EMBED_TASK, "caption": CAPTION_TASK}


def enqueue(stage: str, image_id: str) -> None:
    app.send_task(_TASKS[stage], args=(image_id,), queue=get_settings().queue(stage))


def enqueue_embed(image_id: str) -> None:
    enqueue("embed", image_id)


def queue_depths() -> dict[str, int]:
    """Messages waiting in each queue (Redis list lengths)."""
    settings = get_settings()
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        return {name: int(client.llen(settings.queue(name))) for name in _TASKS}
