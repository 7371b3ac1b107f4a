"""A batching worker when its pool refuses a batch, kills one for its time limit, or holds more
retries than Celery's ETA limit: a real caption worker (celery-batches buffer, the app's prefetch, a
prefork pool) on a private Redis, whose batches only sleep and record themselves
(tests/support/slow_batches.py, flaky_pool.py, stuck_batches.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

from imagesearch.config import Settings
from imagesearch.dev.procs import wait_until
from imagesearch.redis_state import connect
from imagesearch.vocab import Stage
from tests.support.processes import start_worker
from wiring import build_services
from workers.celery_app import TASK_OF_STAGE, app

BATCH = 8
PREFETCH = 2 * BATCH  # WorkerSettings.prefetch_multiplier for a caption worker of one process


def _worker(data_dir, log_key: str, includes: str, *extra_args: str, **env: str):
    return start_worker(data_dir, "worker-caption", queues=("caption",), extra_args=("-I", includes, *extra_args),
                        IMAGESEARCH_CAPTION_BATCH_SIZE=str(BATCH), IMAGESEARCH_EMBED_FLUSH_EVERY="64",
                        IMAGESEARCH_BATCH_FLUSH_SECONDS="0.5", TEST_BATCH_LOG_KEY=log_key,
                        **{"TEST_BATCH_SECONDS": "0.3", **env})


def _ran(client, log_key: str) -> Counter:
    return Counter(i for raw in client.lrange(log_key, 0, -1) for i in json.loads(raw)["ids"])


def _prefetch_count(queue_app) -> int:
    (stats,) = (queue_app.control.inspect(timeout=3).stats() or {}).values()
    return stats["prefetch_count"]


def _assert_each_ran_once(client, log_key: str, sent: list[str], caption_queue: str) -> None:
    wait_until(lambda: set(_ran(client, log_key)) >= set(sent), 60, 0.1, "every message ran")
    time.sleep(1.5)  # a message run twice would show up now
    assert _ran(client, log_key) == Counter(sent)
    assert client.llen(caption_queue) == 0
    wait_until(lambda: client.hlen("unacked") == 0, 10, 0.1, "every message acknowledged")


def test_a_batch_the_pool_refuses_goes_back_to_the_buffer(broker, data_dir):
    settings = Settings()
    queue, client = build_services(settings).queue, connect(broker.url, timeout=10)
    caption_queue = settings.keys.queue(Stage.CAPTION)
    log_key = f"batches-{uuid.uuid4().hex[:6]}"
    worker = _worker(data_dir, log_key, "tests.support.slow_batches,tests.support.flaky_pool",
                     TEST_POOL_REFUSALS="1")
    try:
        sent = [f"img-{n}" for n in range(3)]
        for image_id in sent:
            queue.enqueue(Stage.CAPTION, image_id)
        # Refused on the first flush, they run on the next tick (before: in no list, never again
        # until the worker restarted).
        _assert_each_ran_once(client, log_key, sent, caption_queue)
        assert "batch refused by tests.support.flaky_pool" in worker.output()
        assert len(client.lrange(log_key, 0, -1)) == 1  # the refused batch, whole, on the next tick
    finally:
        worker.close()


def test_a_batch_killed_for_its_hard_time_limit_is_requeued(broker, data_dir):
    settings = Settings()
    queue, client = build_services(settings).queue, connect(broker.url, timeout=10)
    caption_queue = settings.keys.queue(Stage.CAPTION)
    log_key = f"batches-{uuid.uuid4().hex[:6]}"
    worker = _worker(data_dir, log_key, "tests.support.stuck_batches", "--time-limit", "3",
                     TEST_STUCK_SECONDS="60")
    try:
        sent = [f"img-{n}" for n in range(3)]
        for image_id in sent:
            queue.enqueue(Stage.CAPTION, image_id)
        # The first delivery hangs and its process is killed; the messages go back to the queue and
        # run on their second delivery (before: acknowledged, so dropped).
        _assert_each_ran_once(client, log_key, sent, caption_queue)
        deliveries = {k.decode(): int(v) for k, v in client.hgetall(f"{log_key}:deliveries").items()}
        assert deliveries == dict.fromkeys(sent, 2)
        assert "TimeLimitExceeded" in worker.output() and "requeued" in worker.output()
    finally:
        worker.close()


def test_retries_held_for_their_eta_raise_the_prefetch_only_up_to_the_eta_limit(broker, data_dir):
    settings = Settings()
    queue, client = build_services(settings).queue, connect(broker.url, timeout=10)
    caption_queue = settings.keys.queue(Stage.CAPTION)
    log_key = f"batches-{uuid.uuid4().hex[:6]}"
    limit = app.conf.worker_eta_task_limit
    assert limit is not None and PREFETCH < limit <= 5000  # a bound, and one this test can reach
    worker = _worker(data_dir, log_key, "tests.support.slow_batches", TEST_BATCH_SECONDS="0")
    try:
        countdown = 25.0
        retries = [f"retry-{n:04d}" for n in range(limit + 10)]
        with queue.app.producer_or_acquire() as producer:
            for image_id in retries:
                queue.app.send_task(TASK_OF_STAGE[Stage.CAPTION], args=(image_id,), kwargs={"attempt": 1},
                                    countdown=countdown, queue=caption_queue, producer=producer)
        sent_at = time.time()
        # The worker holds retries until the QoS reaches the limit, then fetches no more of them.
        wait_until(lambda: client.llen(caption_queue) <= len(retries) - limit, 30, 0.1, "the retries fetched")
        time.sleep(1.0)
        assert client.llen(caption_queue) == len(retries) - limit  # before: none left, the QoS unbounded
        assert _prefetch_count(queue.app) == limit
        assert time.time() - sent_at < countdown - 2, "too slow to see them all held"
        assert not _ran(client, log_key)
        # Once due they all run, the rest are fetched, and the QoS comes back to the worker's own:
        # the messages held past the limit raised nothing and gave nothing back.
        wait_until(lambda: sum(_ran(client, log_key).values()) >= len(retries), countdown + 90, 0.5,
                   "every retry ran")
        _assert_each_ran_once(client, log_key, retries, caption_queue)
        assert _prefetch_count(queue.app) == PREFETCH
    finally:
        worker.close()
