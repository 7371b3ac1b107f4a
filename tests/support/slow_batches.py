"""A stand-in batch for worker tests, loaded with ``celery worker -I tests.support.slow_batches``.

The embed and caption tasks keep their real celery-batches machinery (``ReliableBatches``, the
app's prefetch, the worker's pool); only the work inside a batch is replaced: it sleeps
``TEST_BATCH_SECONDS`` as a slow model would and returns True, which acknowledges the messages.
Each batch (its image ids, pid, start and end, wall clock) is one JSON entry of the Redis list
``TEST_BATCH_LOG_KEY`` once it ended, and of ``<TEST_BATCH_LOG_KEY>:started`` as it starts.
"""

from __future__ import annotations

import json
import os
import time

from imagesearch.config import get_settings
from imagesearch.redis_state import connect
from imagesearch.vocab import Stage
from workers import tasks


def _record_and_sleep(stage: Stage, requests: list) -> bool:
    key = os.environ["TEST_BATCH_LOG_KEY"]
    entry = {"stage": str(stage), "ids": [str(r.args[0]) for r in requests], "pid": os.getpid(),
             "started": time.time()}
    client = connect(get_settings().redis.url, timeout=10)
    try:
        client.rpush(f"{key}:started", json.dumps(entry))
        time.sleep(float(os.environ.get("TEST_BATCH_SECONDS", "1")))
        entry["ended"] = time.time()
        client.rpush(key, json.dumps(entry))
    finally:
        client.close()
    return True


tasks._handle = _record_and_sleep
