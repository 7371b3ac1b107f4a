"""test_hostile_images.py's batch, through a real embed worker with the tensor path forced on
(``IMAGESEARCH_TENSOR_DECODE=on``: what a GPU worker runs, here with ``device="cpu"``): the same
ends for every file, the worker alive."""

from __future__ import annotations

import io

from PIL import Image

from imagesearch.blobs import LocalBlobStore, original_key
from imagesearch.config import Settings
from imagesearch.dev.procs import wait_until
from imagesearch.imaging import thumbnail_size
from imagesearch.records import ImageRecord, content_hash
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.broker import enqueue_embed
from tests.support.hostile import corpus
from tests.support.images import jpeg
from tests.support.processes import start_worker


def test_hostile_corpus_on_the_tensor_path(redis_client, data_dir):
    settings = Settings(data_dir=data_dir)
    store, blobs = EmbeddedStore(settings.store_path), LocalBlobStore(settings.blob_dir)
    files = {f"good-{i}.jpg": (jpeg((i * 40, 120, 30), size=(640, 480)), "indexed") for i in range(4)} | corpus()
    expected: dict[str, str] = {}
    for n, (name, (data, outcome)) in enumerate(files.items()):
        image_id = f"t{n:03d}"
        blobs.put(original_key(image_id), data)
        store.put(ImageRecord(id=image_id, blob_key=original_key(image_id), content_hash=content_hash(data),
                              source=name))
        expected[image_id] = outcome
    for image_id in expected:
        enqueue_embed(image_id)
    worker = start_worker(data_dir, "worker", queues=("embed",), IMAGESEARCH_TENSOR_DECODE="on",
                          IMAGESEARCH_EMBED_BATCH_SIZE="4")
    try:
        wait_until(lambda: all(r.status != "queued" for r in store.get_many(expected).values()), 120, 0.5,
                   what="every file settled")
        records = store.get_many(expected)
        assert {records[i].source: records[i].status for i in expected} == \
            {records[i].source: expected[i] for i in expected}
        for image_id, outcome in expected.items():
            record = records[image_id]
            if outcome == "failed":
                assert record.error.startswith("embed: ") and len(record.error) > 10
            else:
                thumb = Image.open(io.BytesIO(blobs.get(record.thumb_key)))
                assert thumb.format == "JPEG"
                assert thumb.size == thumbnail_size(record.width, record.height, settings.ingest.thumbnail_size)
        assert "pixels" in next(r.error for r in records.values() if r.source == "bomb.png")
        rotated = next(r for r in records.values() if r.source == "rotated-exif.jpg")
        assert (rotated.width, rotated.height) == (100, 200)  # EXIF orientation applied
        good = [r for r in records.values() if r.source.startswith("good-")]
        assert all((r.width, r.height) == (640, 480) for r in good)
        assert "embed stage: tensor path" in worker.output()  # the path this test is about did run
        assert worker.popen.poll() is None and "Traceback" not in worker.output()
    finally:
        worker.close()
