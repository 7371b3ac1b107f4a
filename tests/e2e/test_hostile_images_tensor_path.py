"""test_hostile_images.py's batch, through a real embed worker with the tensor path forced on
(``IMAGESEARCH_TENSOR_DECODE=on``: what a GPU worker runs, here with ``device="cpu"``): the same
ends for every file, the worker alive."""

from __future__ import annotations

import io

from PIL import Image

from imagesearch.imaging import thumbnail_size
from tests.support.processes import start_worker


def test_hostile_corpus_on_the_tensor_path(hostile_batch, data_dir):
    batch = hostile_batch("t", good_size=(640, 480))
    settings, blobs, expected = batch.settings, batch.blobs, batch.expected
    worker = start_worker(data_dir, "worker", queues=("embed",), IMAGESEARCH_TENSOR_DECODE="on",
                          IMAGESEARCH_EMBED_BATCH_SIZE="4")
    try:
        records = batch.settled()
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
