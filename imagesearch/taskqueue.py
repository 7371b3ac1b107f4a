"""The task queue port: how the domain hands an image id to a worker stage.

The domain only ever names a stage and an image id; messages never carry pixels. The Celery
implementation is ``workers.queue.CeleryTaskQueue`` (the only module that sends Celery messages);
:class:`MemoryTaskQueue` keeps what was sent, for tests and for processes that must not enqueue.
"""

from __future__ import annotations

from typing import Protocol

from imagesearch.errors import TransientError
from imagesearch.vocab import Stage


class QueueUnavailable(TransientError):
    """The broker could not take the message (or answer a depth query)."""


class TaskQueue(Protocol):
    def enqueue(self, stage: Stage, image_id: str) -> None:
        """Send one image id to a stage's queue; raises :class:`QueueUnavailable`."""

    def depths(self) -> dict[Stage, int]:
        """Messages waiting per stage; raises :class:`QueueUnavailable`."""


class MemoryTaskQueue:
    """Keeps every message in a list per stage (the null implementation)."""

    def __init__(self) -> None:
        self.sent: dict[Stage, list[str]] = {stage: [] for stage in Stage}

    def enqueue(self, stage: Stage, image_id: str) -> None:
        self.sent[Stage(stage)].append(image_id)

    def depths(self) -> dict[Stage, int]:
        return {stage: len(ids) for stage, ids in self.sent.items()}
