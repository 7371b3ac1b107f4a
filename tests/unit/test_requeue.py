"""Re-sending records whose message was lost: only queued ones, only past the age given."""

from __future__ import annotations

import time

import numpy as np

from imagesearch.requeue import requeue_stale
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.factories import record, vector_update


def test_only_queued_records_older_than_the_age_are_sent_again(tmp_path):
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    for image_id in ("lost", "done", "broken"):
        store.put(record(image_id))
    store.set_image_vectors([vector_update("done", np.ones(4, np.float32) / 2)])
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
