"""Batches stay full under a backlog, and a lone message still runs soon: a real caption worker
(its celery-batches buffer, the app's prefetch, a prefork pool) on a private Redis, whose batches
only sleep and record themselves (tests/support/slow_batches.py).

celery-batches flushed its buffer on every timer tick even while the previous batch still ran,
so messages trickling in behind a slow batch were queued in the pool as many small batches.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from itertools import pairwise

from imagesearch.config import Settings
from imagesearch.dev.procs import wait_until
from imagesearch.redis_state import connect
from imagesearch.vocab import Stage
from tests.support.processes import start_worker
from wiring import build_services

BATCH = 8


def _worker(data_dir, log_key: str, *, flush_seconds: float, batch_seconds: float):
    return start_worker(data_dir, "worker-caption", queues=("caption",),
                        extra_args=("-I", "tests.support.slow_batches"),
                        IMAGESEARCH_CAPTION_BATCH_SIZE=str(BATCH),
                        # The default embed batch: a caption worker's prefetch must not depend on it.
                        IMAGESEARCH_EMBED_FLUSH_EVERY="64",
                        IMAGESEARCH_BATCH_FLUSH_SECONDS=str(flush_seconds),
                        TEST_BATCH_SECONDS=str(batch_seconds), TEST_BATCH_LOG_KEY=log_key)


def _entries(client, key: str) -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(key, 0, -1)]


def _ran(client, log_key: str, expected: int, timeout: float) -> list[dict]:
    """The finished batches once ``expected`` messages went through, then a moment later (so a
    message run twice shows up too), in the order they ran."""
    wait_until(lambda: sum(len(b["ids"]) for b in _entries(client, log_key)) >= expected, timeout,
               0.1, f"{expected} messages through the batches")
    time.sleep(1.5)
    return sorted(_entries(client, log_key), key=lambda b: b["started"])


def _assert_each_once(client, queue: str, batches: list[dict], sent: list[str]) -> None:
    assert Counter(i for b in batches for i in b["ids"]) == Counter(sent)  # none lost, none twice
    assert client.llen(queue) == 0
    # Acknowledged once their batch returned: kombu's unacknowledged messages, empty again.
    wait_until(lambda: client.hlen("unacked") == 0, 10, 0.1, "every message acknowledged")


def test_a_backlog_runs_full_batches_back_to_back(broker, data_dir):
    settings = Settings()
    queue, client = build_services(settings).queue, connect(broker.url, timeout=10)
    log_key = f"batches-{uuid.uuid4().hex[:6]}"
    worker = _worker(data_dir, log_key, flush_seconds=0.5, batch_seconds=1.5)
    try:
        sent = [f"img-{n:02d}" for n in range(28)]
        for image_id in sent[:BATCH]:  # a full batch at once: it starts right away
            queue.enqueue(Stage.CAPTION, image_id)
        wait_until(lambda: client.llen(f"{log_key}:started"), 30, 0.05, "the first batch started")
        # Late acknowledgement is untouched: the running batch's messages are not acknowledged yet.
        assert client.hlen("unacked") >= BATCH
        for image_id in sent[BATCH:]:  # then the rest trickles in while batches are running
            queue.enqueue(Stage.CAPTION, image_id)
            time.sleep(0.1)
        batches = _ran(client, log_key, len(sent), 60)
        sizes = [len(b["ids"]) for b in batches]
        assert sizes == [8, 8, 8, 4], sizes  # before: [8, 5, 5, 5, 5], a batch per timer tick
        # Each batch started as soon as the one before it returned: the next one was already
        # waiting in the pool (the prefetch holds a running batch and a full one more), and the
        # last, partial one went as soon as the pool was free rather than at the next tick.
        gaps = [later["started"] - earlier["ended"] for earlier, later in pairwise(batches)]
        assert max(gaps) < 0.45, gaps  # a timer tick would come up to 0.5 s later
        _assert_each_once(client, settings.keys.queue(Stage.CAPTION), batches, sent)
        assert "Traceback" not in worker.output()
    finally:
        worker.close()


def test_a_lone_message_runs_after_the_flush_interval_or_right_after_the_running_batch(broker, data_dir):
    settings = Settings()
    queue, client = build_services(settings).queue, connect(broker.url, timeout=10)
    log_key = f"batches-{uuid.uuid4().hex[:6]}"
    flush_seconds, batch_seconds = 2.0, 1.0
    worker = _worker(data_dir, log_key, flush_seconds=flush_seconds, batch_seconds=batch_seconds)
    try:
        sent_at = time.time()
        queue.enqueue(Stage.CAPTION, "alone")
        wait_until(lambda: client.llen(f"{log_key}:started"), 30, 0.05, "the lone message started")
        first = json.loads(client.lindex(f"{log_key}:started", 0))
        # An idle worker waits one flush interval for company, no longer.
        assert first["started"] - sent_at < flush_seconds + 1.0, first["started"] - sent_at
        time.sleep(0.3)
        queue.enqueue(Stage.CAPTION, "behind")  # arrives while that batch runs
        batches = _ran(client, log_key, 2, 30)
        assert [b["ids"] for b in batches] == [["alone"], ["behind"]]
        # It goes to the pool when the running batch returns, not at the next timer tick.
        assert batches[1]["started"] - batches[0]["ended"] < 0.5, batches
        _assert_each_once(client, settings.keys.queue(Stage.CAPTION), batches, ["alone", "behind"])
    finally:
        worker.close()
