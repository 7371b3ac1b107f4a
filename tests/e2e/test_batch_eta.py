"""Retries waiting for their ETA do not stop a batching worker from taking new messages: a real
caption worker (its celery-batches buffer, the app's prefetch, a prefork pool) on a private Redis,
whose batches only sleep and record themselves (tests/support/slow_batches.py).

A transient failure is re-sent with ``countdown=``. celery-batches kept such a message in its
buffer, unacknowledged, until it was due, so it held one of the worker's prefetch slots all that
time: a prefetch's worth of retries stopped the worker fetching fresh uploads until they were due.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import redis
from kombu.exceptions import OperationalError

from imagesearch.config import Settings
from imagesearch.dev.procs import wait_until
from imagesearch.redis_state import connect
from imagesearch.vocab import Stage
from tests.support.processes import start_worker
from wiring import build_services
from workers.celery_app import TASK_OF_STAGE

BATCH = 8
PREFETCH = 2 * BATCH  # WorkerSettings.prefetch_multiplier for a caption worker of one process
COUNTDOWN = 8.0


def _entries(client, key: str) -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(key, 0, -1)]


def _prefetch_count(app) -> int:
    """The worker's prefetch as its consumer has it now (Celery's QoS), asked over remote control;
    asked again where a Redis restart closed this process's connection under it."""
    for attempt in range(3):
        try:
            replies = app.control.inspect(timeout=3).stats() or {}
            break
        except (redis.RedisError, OperationalError):
            if attempt == 2:
                raise
    (stats,) = replies.values()
    return stats["prefetch_count"]


def _worker(data_dir, log_key: str):
    """A caption worker whose batches take 0.3 s and record themselves under ``log_key``."""
    return start_worker(data_dir, "worker-caption", queues=("caption",),
                        extra_args=("-I", "tests.support.slow_batches"),
                        IMAGESEARCH_CAPTION_BATCH_SIZE=str(BATCH), IMAGESEARCH_EMBED_FLUSH_EVERY="64",
                        IMAGESEARCH_BATCH_FLUSH_SECONDS="0.5", TEST_BATCH_SECONDS="0.3",
                        TEST_BATCH_LOG_KEY=log_key)


def test_fresh_messages_run_while_a_prefetch_of_retries_waits_for_its_eta(broker, data_dir):
    settings = Settings()
    queue, client = build_services(settings).queue, connect(broker.url, timeout=10)
    caption_queue = settings.keys.queue(Stage.CAPTION)
    log_key = f"batches-{uuid.uuid4().hex[:6]}"
    worker = _worker(data_dir, log_key)
    try:
        assert _prefetch_count(queue.app) == PREFETCH
        # Retries as workers.tasks re-sends them, more of them than the worker's prefetch.
        retries = [f"retry-{n:02d}" for n in range(PREFETCH + BATCH)]
        due: dict[str, float] = {}
        for image_id in retries:
            due[image_id] = time.time() + COUNTDOWN  # the message's ETA is a moment later still
            queue.app.send_task(TASK_OF_STAGE[Stage.CAPTION], args=(image_id,), kwargs={"attempt": 1},
                                countdown=COUNTDOWN, queue=caption_queue)
        # The worker took every retry it would: before, the first PREFETCH, and the rest stayed queued.
        wait_until(lambda: client.llen(caption_queue) <= len(retries) - PREFETCH, 10, 0.05, "retries fetched")
        time.sleep(1.0)

        fresh = [f"fresh-{n}" for n in range(BATCH)]
        fresh_sent = time.time()
        for image_id in fresh:
            queue.enqueue(Stage.CAPTION, image_id)
        wait_until(lambda: {i for b in _entries(client, log_key) for i in b["ids"]} >= set(fresh), 30, 0.05,
                   "the fresh messages through the batches")
        done_at = {i: b["ended"] for b in _entries(client, log_key) for i in b["ids"]}
        # Promptly, well before the retries are due (before: only once they were, COUNTDOWN later).
        assert max(done_at[i] for i in fresh) - fresh_sent < 3.0, [done_at[i] - fresh_sent for i in fresh]
        assert max(done_at[i] for i in fresh) < min(due.values()) - 1.0
        assert not set(done_at) & set(retries), "a retry ran before its ETA"
        # Held but not due, the retries no longer take prefetch slots: Celery's QoS went up by one each.
        assert _prefetch_count(queue.app) == PREFETCH + len(retries)
        assert client.llen(caption_queue) == 0

        wait_until(lambda: sum(len(b["ids"]) for b in _entries(client, log_key)) >= len(retries) + len(fresh),
                   COUNTDOWN + 30, 0.1, "every retry through the batches")
        time.sleep(1.5)  # a message run twice would show up now
        batches = _entries(client, log_key)
        started_at = {i: b["started"] for b in batches for i in b["ids"]}
        early = {i: due[i] - started_at[i] for i in retries if started_at[i] < due[i]}
        assert not early, f"retries started before their ETA (seconds early): {early}"
        assert Counter(i for b in batches for i in b["ids"]) == Counter(retries + fresh)  # none lost, none twice
        assert client.llen(caption_queue) == 0
        # Acknowledged once their batch returned: kombu's unacknowledged messages, empty again.
        wait_until(lambda: client.hlen("unacked") == 0, 10, 0.1, "every message acknowledged")
        # Every slot raised for a retry was given back, and no more.
        assert _prefetch_count(queue.app) == PREFETCH
        assert "Traceback" not in worker.output()
    finally:
        worker.close()


def test_a_broker_reconnect_forgets_the_held_retries_slots_and_still_runs_them(durable_broker, data_dir):
    """Redis (AOF) is killed and restarted while the worker holds retries for their ETA: the
    consumer's fresh QoS owes those messages nothing, so their release must not lower it."""
    settings = Settings()
    queue, client = build_services(settings).queue, connect(durable_broker.url, timeout=10)
    caption_queue = settings.keys.queue(Stage.CAPTION)
    log_key = f"batches-{uuid.uuid4().hex[:6]}"
    worker = _worker(data_dir, log_key)

    def send(ids: list[str], countdown: float) -> None:
        for image_id in ids:
            queue.app.send_task(TASK_OF_STAGE[Stage.CAPTION], args=(image_id,), kwargs={"attempt": 1},
                                countdown=countdown, queue=caption_queue)

    def ran() -> Counter:
        return Counter(i for b in _entries(connect(durable_broker.url, timeout=10), log_key) for i in b["ids"])

    try:
        before = [f"before-{n:02d}" for n in range(12)]
        send(before, 12.0)
        wait_until(lambda: _prefetch_count(queue.app) == PREFETCH + len(before), 10, 0.2, "the retries held")
        durable_broker.server.kill()
        durable_broker.server.start()
        wait_until(lambda: worker.output().count("Connected to redis://") >= 2, 60, 0.2, "the worker reconnected")
        client = connect(durable_broker.url, timeout=10)
        # A fresh QoS for the new channel, where the held messages take no slot (the old one may
        # answer for a moment, until the consumer's task step has started again).
        wait_until(lambda: _prefetch_count(queue.app) == PREFETCH, 10, 0.2, "the new channel's own prefetch")
        after = [f"after-{n}" for n in range(4)]
        send(after, 20.0)  # due well after the ones held across the restart
        wait_until(lambda: _prefetch_count(queue.app) == PREFETCH + len(after), 10, 0.2, "the new retries held")
        # The ones held across the restart still run once due, and give back nothing on release.
        wait_until(lambda: set(ran()) >= set(before), 40, 0.2, "the retries held across the restart ran")
        assert not set(ran()) & set(after)
        assert _prefetch_count(queue.app) == PREFETCH + len(after)
        wait_until(lambda: set(ran()) >= set(after), 40, 0.2, "the new retries ran")
        time.sleep(1.5)
        assert ran() == Counter(before + after)  # none lost, none twice
        assert client.llen(caption_queue) == 0
        # The ones delivered before the restart were acknowledged too (kombu's hash survived it).
        wait_until(lambda: client.hlen("unacked") == 0, 10, 0.1, "every message acknowledged")
        assert _prefetch_count(queue.app) == PREFETCH
    finally:
        worker.close()
