"""Re-sending records whose message was lost.

A record is written as ``queued`` before its message is sent, so a message lost on the way (the
broker died while handing it to a worker: Redis delivery is a pop followed by a separate write of
the unacknowledged copy) leaves the record ``queued`` for good. Embed workers re-send records that
stayed ``queued`` far longer than processing takes, while the embed queue is empty.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from imagesearch.stores.base import Store

log = logging.getLogger(__name__)


def requeue_stale(store: Store, send: Callable[[str], bool], *, older_than_seconds: float,
                  limit: int = 1000, now: float | None = None) -> list[str]:
    """Send the embed message again for records ``queued`` for longer than ``older_than_seconds``.

    ``send`` re-sends one record's message and says whether it did (it declines one it re-sent
    recently). A duplicate of a message that was not lost after all is harmless: the second
    delivery finds the image indexed and skips it. Returns the ids sent.
    """
    cutoff = (time.time() if now is None else now) - older_than_seconds
    ids = [image_id for image_id in store.stale_queued(cutoff, limit) if send(image_id)]
    if ids:
        log.warning("re-sent %d record(s) still queued after %.0f s with an empty queue: their messages were "
                    "lost", len(ids), older_than_seconds, extra={"image_ids": ids[:20]})
    return ids
