"""A batching worker across broker reconnects: a real caption worker (its celery-batches buffer, the
app's prefetch, a prefork pool) on a private Redis, whose batches only sleep and record themselves
(tests/support/slow_batches.py).

A reconnect clears the consumer's timer, flush timer included: a part-filled buffer waited until
another message arrived (with no traffic, until the visibility timeout). And where Redis stayed up,
kombu restored every unacknowledged message as the old channel closed: they came again while their
in-memory copies (buffered, or held for their ETA) were still there, and each ran twice.
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
from workers.celery_app import TASK_OF_STAGE

BATCH = 8
PREFETCH = 2 * BATCH  # WorkerSettings.prefetch_multiplier for a caption worker of one process


def _worker(data_dir, log_key: str, *, flush_seconds: float):
    return start_worker(data_dir, "worker-caption", queues=("caption",),
                        extra_args=("-I", "tests.support.slow_batches"),
                        IMAGESEARCH_CAPTION_BATCH_SIZE=str(BATCH), IMAGESEARCH_EMBED_FLUSH_EVERY="64",
                        IMAGESEARCH_BATCH_FLUSH_SECONDS=str(flush_seconds), TEST_BATCH_SECONDS="0.3",
                        TEST_BATCH_LOG_KEY=log_key)


def _ran(url: str, log_key: str) -> Counter:
    client = connect(url, timeout=10)
    try:
        return Counter(i for raw in client.lrange(log_key, 0, -1) for i in json.loads(raw)["ids"])
    finally:
        client.close()


def _prefetch_count(app) -> int:
    (stats,) = (app.control.inspect(timeout=3).stats() or {}).values()
    return stats["prefetch_count"]


def _errors(worker) -> list[str]:
    """The worker's log lines at ERROR or above (a lost connection is a WARNING)."""
    return [line for line in worker.output().splitlines()
            if '"level": "ERROR"' in line or '"level": "CRITICAL"' in line]


def _reconnected(worker) -> bool:
    return worker.output().count("Connected to redis://") >= 2


def test_a_part_filled_buffer_runs_after_a_redis_restart_without_more_traffic(durable_broker, data_dir):
    settings = Settings()
    queue, client = build_services(settings).queue, connect(durable_broker.url, timeout=10)
    caption_queue = settings.keys.queue(Stage.CAPTION)
    log_key = f"batches-{uuid.uuid4().hex[:6]}"
    flush_seconds = 4.0
    worker = _worker(data_dir, log_key, flush_seconds=flush_seconds)
    try:
        sent = [f"img-{n}" for n in range(3)]  # less than a batch: only the flush timer runs them
        for image_id in sent:
            queue.enqueue(Stage.CAPTION, image_id)
        wait_until(lambda: client.hlen("unacked") == len(sent) and client.llen(caption_queue) == 0, 10, 0.05,
                   "the messages buffered")
        durable_broker.server.kill()  # before the flush timer fires
        durable_broker.server.start()
        wait_until(lambda: _reconnected(worker), 60, 0.2, "the worker reconnected")
        reconnected = time.time()
        assert not _ran(durable_broker.url, log_key), "the buffer flushed before the restart"
        # Nothing else arrives: the flush timer armed again on the new timer runs the buffer
        # (before: it waited for the next message, up to the visibility timeout).
        wait_until(lambda: set(_ran(durable_broker.url, log_key)) >= set(sent), flush_seconds + 10, 0.2,
                   "the buffered messages ran")
        assert time.time() - reconnected < flush_seconds + 5
        time.sleep(1.5)  # a message run twice would show up now
        assert _ran(durable_broker.url, log_key) == Counter(sent)
        client = connect(durable_broker.url, timeout=10)
        assert client.llen(caption_queue) == 0
        # Redis was down as the old channel closed, so kombu restored nothing: the in-memory copies
        # ran, and their acknowledgements, sent through the closed channel, still reached Redis.
        wait_until(lambda: client.hlen("unacked") == 0, 10, 0.1, "every message acknowledged")
        assert "Couldn't ack" not in worker.output() and "Error in timer" not in worker.output()
    finally:
        worker.close()


def test_messages_restored_after_a_dropped_connection_run_once(durable_broker, data_dir):
    """Redis stays up and drops the worker's connections (CLIENT KILL): kombu puts the buffered and
    held messages back on the queue and the worker receives them again; each still runs once, and
    from the new copy, which is acknowledged."""
    settings = Settings()
    queue, client = build_services(settings).queue, connect(durable_broker.url, timeout=10)
    caption_queue = settings.keys.queue(Stage.CAPTION)
    log_key = f"batches-{uuid.uuid4().hex[:6]}"
    worker = _worker(data_dir, log_key, flush_seconds=4.0)
    try:
        fresh = [f"fresh-{n}" for n in range(4)]  # buffered, waiting for the flush timer
        retries = [f"retry-{n}" for n in range(3)]  # held for their ETA
        for image_id in retries:
            queue.app.send_task(TASK_OF_STAGE[Stage.CAPTION], args=(image_id,), kwargs={"attempt": 1},
                                countdown=7.0, queue=caption_queue)
        for image_id in fresh:
            queue.enqueue(Stage.CAPTION, image_id)
        sent = fresh + retries
        wait_until(lambda: client.hlen("unacked") == len(sent) and client.llen(caption_queue) == 0, 10, 0.05,
                   "the messages buffered and held")
        killed = client.execute_command("CLIENT", "KILL", "TYPE", "normal")  # every client but this one
        assert killed >= 1
        wait_until(lambda: _reconnected(worker), 30, 0.2, "the worker reconnected")
        assert f"Restoring {len(sent)} unacknowledged message(s)" in worker.output()
        wait_until(lambda: set(_ran(durable_broker.url, log_key)) >= set(sent), 30, 0.2, "every message ran")
        time.sleep(1.5)  # a message run twice would show up now
        assert _ran(durable_broker.url, log_key) == Counter(sent)  # before: each of them twice
        assert client.llen(caption_queue) == 0
        # The copies that ran were the new deliveries: acknowledged on the live channel.
        wait_until(lambda: client.hlen("unacked") == 0, 10, 0.1, "every message acknowledged")
        # The new QoS gave back the raises of the retries it held, and the dropped copies took none.
        assert _prefetch_count(queue.app) == PREFETCH
        assert not _errors(worker)
    finally:
        worker.close()
