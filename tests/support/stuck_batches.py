"""A batch that hangs on an image's first delivery, for worker tests run with ``--time-limit``;
loaded with ``celery worker -I tests.support.stuck_batches``.

The first time an image is delivered its batch sleeps ``TEST_STUCK_SECONDS`` (past the time limit,
so the pool kills the process); each later delivery runs as in :mod:`tests.support.slow_batches`
(sleeps ``TEST_BATCH_SECONDS``, records itself under ``TEST_BATCH_LOG_KEY``, returns True). Every
delivery counts in the Redis hash ``<TEST_BATCH_LOG_KEY>:deliveries``.
"""

from __future__ import annotations

import os
import time

from imagesearch.config import get_settings
from imagesearch.redis_state import connect
from imagesearch.vocab import Stage
from tests.support import slow_batches
from workers import tasks


def _stuck_on_first_delivery(stage: Stage, requests: list) -> bool:
    key = f"{os.environ['TEST_BATCH_LOG_KEY']}:deliveries"
    client = connect(get_settings().redis.url, timeout=10)
    try:
        counts = [client.hincrby(key, str(r.args[0]), 1) for r in requests]
    finally:
        client.close()
    if min(counts) == 1:
        time.sleep(float(os.environ["TEST_STUCK_SECONDS"]))
    return slow_batches._record_and_sleep(stage, requests)


tasks._handle = _stuck_on_first_delivery
