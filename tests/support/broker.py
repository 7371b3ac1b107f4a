"""Sending real Celery messages from a test, through the same composition root the API uses."""

from __future__ import annotations

from imagesearch.vocab import Stage
from wiring import build_services


def enqueue_embed(image_id: str) -> None:
    """Queue ``image_id`` for the embed stage on the broker and namespace of this test run."""
    build_services().queue.enqueue(Stage.EMBED, image_id)
