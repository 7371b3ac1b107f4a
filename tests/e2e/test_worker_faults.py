"""The worker under faults: transient storage errors are retried, duplicates converge, deletes win.

Every test here has its own Redis server and namespace (the ``broker`` fixtures of
tests/e2e/conftest.py), and the processes it started are closed after it even when it fails: a
killed worker's unacknowledged messages, or another test run flushing the shared db, never reach
another test.
"""

from __future__ import annotations

import shutil

from imagesearch import ingest
from imagesearch.blobs import LocalBlobStore
from imagesearch.config import Settings
from imagesearch.dev.procs import wait_until
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.images import jpeg
from tests.support.processes import start_worker


def test_transient_blob_error_is_retried_then_indexed(broker, data_dir):
    settings = Settings(data_dir=data_dir)
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    record = ingest.accept(ingest.Upload(jpeg()), settings=settings, store=store, blobs=blobs, enqueue=lambda _: None)
    original = settings.blob_dir / record.blob_key
    saved = original.read_bytes()
    # Make the blob unreadable in a way that is an I/O error, not a missing file: a directory in its place.
    original.unlink()
    original.mkdir()
    worker = start_worker(data_dir, "worker", IMAGESEARCH_RETRY_BACKOFF_SECONDS="1")
    try:
        broker.enqueue_embed(record.id)
        worker.wait_for_output("1 retried", 60)
        assert store.get(record.id).status == "queued"  # not failed: the error was transient
        shutil.rmtree(original)
        original.write_bytes(saved)
        wait_until(lambda: store.get(record.id).status == "indexed", 60, what="indexed after retry")
        wait_until(lambda: store.get(record.id).caption_status == "done", 60, what="captioned")
    finally:
        worker.close()


def test_duplicate_deliveries_converge_and_deleted_images_are_skipped(broker, data_dir):
    settings = Settings(data_dir=data_dir)
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    kept = ingest.accept(ingest.Upload(jpeg((1, 2, 3))), settings=settings, store=store, blobs=blobs,
                         enqueue=lambda _: None)
    gone = ingest.accept(ingest.Upload(jpeg((9, 9, 9))), settings=settings, store=store, blobs=blobs,
                         enqueue=lambda _: None)
    assert ingest.remove(gone.id, store=store, blobs=blobs)
    for _ in range(3):
        broker.enqueue_embed(kept.id)
    broker.enqueue_embed(gone.id)
    worker = start_worker(data_dir, "worker")
    try:
        wait_until(lambda: (r := store.get(kept.id)) and r.caption_status == "done", 60, what="captioned")
        worker.wait_for_output("skipped", 30)
        assert store.get(gone.id) is None  # a task for a deleted image does not bring it back
        assert store.counts()["indexed"] == 1
        assert "Traceback" not in worker.output()
    finally:
        worker.close()


def test_sigkill_of_the_whole_worker_mid_batch_loses_nothing(broker, data_dir):
    """Kill the worker (parent and child) while it holds unacknowledged messages; a new worker gets
    them back once the visibility timeout passes, and every image ends indexed, once."""
    from imagesearch.stores.base import Filters

    store, ids = _queued_photos(data_dir, broker, 80, lambda i: (i * 7 % 256, 40, 90))
    first = start_worker(data_dir, "worker-1", queues=("embed",), **FAST_REDELIVERY)
    try:
        first.wait_for_output("embed batch:", 90)  # at least one batch done, others prefetched or running
    finally:
        first.kill()  # SIGKILL to the whole process group: no warm shutdown, nothing acknowledged
        first.close()
    assert store.counts()["indexed"] < 80  # killed with work outstanding
    second = start_worker(data_dir, "worker-2", queues=("embed",), **FAST_REDELIVERY)
    try:
        wait_until(lambda: store.counts()["indexed"] == 80, 240, 0.5, what="all 80 indexed after restart")
        clip_model = store.get(ids[0]).image_model
        hits = store.knn("image", store.vector(ids[0], "image")[0], 100, clip_model, Filters())
        assert len(hits) == 80
        assert sorted(i for i, _ in hits) == sorted(ids)  # each image exactly once in the index
    finally:
        second.close()


def test_worker_refuses_an_unsafe_visibility_timeout(broker, data_dir):
    """Redis would redeliver tasks still inside their retry window: the worker must not start."""
    import pytest

    with pytest.raises(RuntimeError, match="VISIBILITY_TIMEOUT"):
        start_worker(data_dir, "unsafe", IMAGESEARCH_VISIBILITY_TIMEOUT_SECONDS="60",
                     IMAGESEARCH_RETRY_BACKOFF_MAX_SECONDS="300")


def test_store_locked_for_a_while_then_tasks_retry_and_complete(broker, data_dir):
    """Another process holds the store's write lock past the busy timeout: the worker sees a
    transient error, retries with backoff, and finishes once the lock is gone."""
    import sqlite3
    import time

    settings = Settings(data_dir=data_dir)
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    ids = [ingest.accept(ingest.Upload(jpeg((i, 50, 50))), settings=settings, store=store, blobs=blobs,
                         enqueue=lambda _: None).id for i in range(3)]
    worker = start_worker(data_dir, "worker", queues=("embed",), IMAGESEARCH_STORE_BUSY_TIMEOUT_SECONDS="0.5",
                          IMAGESEARCH_RETRY_BACKOFF_SECONDS="1")
    locker = sqlite3.connect(settings.store_path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        for image_id in ids:
            broker.enqueue_embed(image_id)
        worker.wait_for_output("retried", 60)
        time.sleep(2)
        assert all(r.status == "queued" for r in store.get_many(ids).values())
        locker.execute("ROLLBACK")
        wait_until(lambda: all(r.status == "indexed" for r in store.get_many(ids).values()), 90, what="indexed")
    finally:
        locker.close()
        worker.close()


def test_records_whose_message_was_lost_are_sent_again(broker, data_dir):
    """Accepted records whose messages never reached the queue are found and embedded once it is empty.

    Its own Redis matters here too: unacknowledged messages that a killed worker left in a shared
    one would (rightly) hold the re-sending back until Redis redelivers them.
    """
    settings = Settings(data_dir=data_dir)
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    lost = [ingest.accept(ingest.Upload(jpeg((i * 40, 7, 7))), settings=settings, store=store, blobs=blobs,
                          enqueue=lambda _: None).id for i in range(3)]
    worker = start_worker(data_dir, "worker", queues=("embed",), IMAGESEARCH_REQUEUE_STALE_AFTER_SECONDS="3")
    try:
        wait_until(lambda: all(r.status == "indexed" for r in store.get_many(lost).values()), 90,
                   what="lost records indexed")
        assert worker.output().count("re-sent 3 record(s)") == 1  # once, not on every sweep
    finally:
        worker.close()


def test_redis_restart_during_ingestion_loses_nothing(durable_broker, data_dir):
    """Redis (AOF, fsync always) is killed and restarted while the worker holds messages."""
    # Redis delivery is a pop then a separate write of the unacknowledged copy: a kill between the
    # two loses that message, and the record it was for is re-sent once the queue is empty.
    env = {**FAST_REDELIVERY, "IMAGESEARCH_REQUEUE_STALE_AFTER_SECONDS": "20"}
    store, _ = _queued_photos(data_dir, durable_broker, 40, lambda i: (i * 5 % 256, 9, 99))
    worker = start_worker(data_dir, "worker", queues=("embed",), **env)
    try:
        worker.wait_for_output("embed batch:", 90)
        durable_broker.server.kill()
        durable_broker.server.start()
        wait_until(lambda: store.counts()["indexed"] == 40, 180, 0.5, what="all 40 indexed after the restart")
        assert worker.popen.poll() is None
        # The consumer reconnected, and every consumer start (the first, and each after a broker
        # reconnect, whose timer is cleared) armed the re-sending of lost messages again.
        log = worker.output()
        connects = log.count("Connected to redis://")
        assert connects >= 2, "the worker never reconnected: the restart was not noticed"
        assert log.count("re-sending records queued for over") == connects
    finally:
        worker.close()


# Redelivery within seconds instead of an hour: a short visibility timeout, short retries, small batches.
FAST_REDELIVERY = {"IMAGESEARCH_VISIBILITY_TIMEOUT_SECONDS": "8", "IMAGESEARCH_RETRY_BACKOFF_MAX_SECONDS": "2",
                   "IMAGESEARCH_MAX_BATCH_SECONDS": "5", "IMAGESEARCH_EMBED_FLUSH_EVERY": "8",
                   "IMAGESEARCH_EMBED_BATCH_SIZE": "4"}


def _queued_photos(data_dir, broker, count: int, colour) -> tuple[EmbeddedStore, list[str]]:
    """``count`` photo-sized uploads accepted and queued on ``broker``; the store and their ids."""
    settings = Settings(data_dir=data_dir)
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    ids = [ingest.accept(ingest.Upload(jpeg(colour(i), size=(640, 480))), settings=settings, store=store,
                         blobs=blobs, enqueue=lambda _: None).id for i in range(count)]
    for image_id in ids:
        broker.enqueue_embed(image_id)
    return store, ids
