"""Hostile and unusual files mixed into a batch of good images, as an S3 source could deliver them:
clear failures for the bad ones, the odd-but-valid ones indexed, the good ones indexed, the worker alive."""

from __future__ import annotations

from imagesearch.blobs import LocalBlobStore, original_key
from imagesearch.config import Settings
from imagesearch.dev.procs import wait_until
from imagesearch.records import ImageRecord, content_hash
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.broker import enqueue_embed
from tests.support.hostile import corpus
from tests.support.images import jpeg
from tests.support.processes import start_worker


def test_hostile_corpus_in_a_batch_of_good_images(redis_client, data_dir):
    settings = Settings(data_dir=data_dir)
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    files = {f"good-{i}.jpg": (jpeg((i * 40, 120, 30)), "indexed") for i in range(4)} | corpus()
    expected: dict[str, str] = {}
    for n, (name, (data, outcome)) in enumerate(files.items()):
        image_id = f"h{n:03d}"
        # Written past the API's header check, as an object from a bucket would arrive.
        blobs.put(original_key(image_id), data)
        store.put(ImageRecord(id=image_id, blob_key=original_key(image_id), content_hash=content_hash(data),
                              source=name))
        expected[image_id] = outcome
    for image_id in expected:
        enqueue_embed(image_id)
    worker = start_worker(data_dir, "worker", queues=("embed",))
    try:
        wait_until(lambda: all(r.status != "queued" for r in store.get_many(expected).values()), 120, 0.5,
                   what="every file settled")
        records = store.get_many(expected)
        outcomes = {records[i].source: records[i].status for i in expected}
        assert outcomes == {records[i].source: expected[i] for i in expected}
        for image_id, outcome in expected.items():
            if outcome == "failed":
                assert records[image_id].error.startswith("embed: ") and len(records[image_id].error) > 10
        assert "pixels" in next(r.error for r in records.values() if r.source == "bomb.png")
        rotated = next(r for r in records.values() if r.source == "rotated-exif.jpg")
        assert (rotated.width, rotated.height) == (100, 200)  # EXIF orientation applied
        assert worker.popen.poll() is None and "Traceback" not in worker.output()
    finally:
        worker.close()
