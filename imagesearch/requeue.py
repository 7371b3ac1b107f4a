"""Re-sending records whose message was lost.

A record is written as ``queued`` before its message is sent, so a message lost on the way (the
broker died while handing it to a worker: Redis delivery is a pop followed by a separate write of
the unacknowledged copy) leaves the record ``queued`` for good. When the embed queue is empty,
nothing can still be on its way to such a record, so the embed worker re-sends it.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from imagesearch.stores.base import Store

log = logging.getLogger(__name__)


def requeue_stale(store: Store, enqueue: Callable[[str], None], *, older_than_seconds: float,
                  limit: int = 1000, now: float | None = None) -> list[str]:
    """Send the embed message again for records ``queued`` for longer than ``older_than_seconds``.

    Call it only when the embed queue is empty; a duplicate of a message still being processed
    is harmless (the second delivery finds the image indexed and skips it).
    """
    cutoff = (time.time() if now is None else now) - older_than_seconds
    ids = store.stale_queued(cutoff, limit)
    for image_id in ids:
        enqueue(image_id)
    if ids:
        log.warning("re-sent %d record(s) still queued after %.0f s with an empty queue: their messages were "
                    "lost", len(ids), older_than_seconds, extra={"image_ids": ids[:20]})
    return ids
