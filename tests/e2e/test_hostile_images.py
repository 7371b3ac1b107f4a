"""Hostile and unusual files mixed into a batch of good images, as an S3 source could deliver them:
clear failures for the bad ones, the odd-but-valid ones indexed, the good ones indexed, the worker alive."""

from __future__ import annotations

from tests.support.processes import start_worker


def test_hostile_corpus_in_a_batch_of_good_images(hostile_batch, data_dir):
    batch = hostile_batch("h")
    expected = batch.expected
    worker = start_worker(data_dir, "worker", queues=("embed",))
    try:
        records = batch.settled()
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
