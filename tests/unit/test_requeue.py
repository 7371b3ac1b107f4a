"""Re-sending records whose message was lost: only queued ones, only past the age given."""

from __future__ import annotations

import time

import numpy as np

from imagesearch.records import ImageRecord
from imagesearch.requeue import requeue_stale
from imagesearch.stores.base import ImageVectorUpdate
from imagesearch.stores.embedded import EmbeddedStore


def test_only_queued_records_older_than_the_age_are_sent_again(tmp_path):
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    for image_id in ("lost", "done", "broken"):
        store.put(ImageRecord(id=image_id, blob_key=f"k/{image_id}", content_hash="h"))
    store.set_image_vectors(
        [
            ImageVectorUpdate(
                id="done",
                content_hash="h",
                vector=np.ones(4, np.float32) / 2,
                model="m",
                thumb_key="t",
                width=1,
                height=1,
            )
        ]
    )
    store.set_failed("broken", "h", "embed", "not an image")
    sent: list[str] = []

    def send(image_id: str) -> bool:
        sent.append(image_id)
        return True

    assert requeue_stale(store, send, older_than_seconds=60) == []  # all younger than a minute
    assert requeue_stale(store, send, older_than_seconds=60, now=time.time() + 61) == ["lost"]
    assert requeue_stale(store, lambda _: False, older_than_seconds=60, now=time.time() + 61) == []  # declined
    assert sent == ["lost"]
    assert store.get("lost").status == "queued"  # re-sending changes nothing in the store
